"""benchmarks/training.py with its FL side in NVFlare's simulator."""

import os

from benchmarks import training as bt
from support import check_measurement



def test_cpu_measurement_fl_in_the_nvflare_simulator(tmp_path):
    out = tmp_path / "result"
    assert bt.main(["--model", "tiny", "--precision", "fp32", "--fl", "sim", "--rounds", "2", "--steps", "2",
                    "--batch_size", "4", "--eval_samples", "8", "--out", str(out)]) == 0
    check_measurement(out, steps_total=4, batch=4)
    assert os.path.exists(out / "fl-fp32-site.log")

