"""What each round cost on the server: one summary line in the job log and scalars in the job's TensorBoard.

LargeModelFedAvg calls ``round_started`` when it sends a round's task and ``round_done`` once the round's global
model is saved. The summary line is what scripts/submit_job.py's follower (fl_deploy/admin/follow.py) reads as the
round's end:

    round 2/3 done in 12.41 s: 2 results aggregated (site-1, site-2); server peak memory 1.17 GiB

Scalars (step = the round, 0-based like the sites'), under the server's own TensorBoard run (its name):

  system/round_duration_s       the round's start (task sent) -> its global model saved
  system/server_peak_memory_bytes   peak resident memory of the server's job process during the round (VmHWM)
  global/<metric>               the round's aggregated metrics, as round_metrics.jsonl: global/global_eval_loss,
                                global/eval_loss (and perplexity) are the sites' held-out losses weighted by their
                                held-out rows, global/held_out_rows their sum (fl_common/held_out.py); the others
                                NVFlare's means weighted by training steps
"""

import re
import time

from fl_common.process_stats import PeakMemory

SUMMARY = re.compile(r"round (\d+)/(\d+) done in ([\d.]+) s: (\d+) results? aggregated \(([^)]*)\)")


def summary_line(rnd: int, total: int, seconds: float, sites: list, peak_bytes: int) -> str:
    """The round's summary; rnd is 1-based. SUMMARY parses it back (fl_deploy/admin/follow.py keeps its own copy of the
    pattern: the follower runs in the admin container, which does not import the job's code)."""
    return (f"round {rnd}/{total} done in {seconds:.2f} s: {len(sites)} result{'s' if len(sites) != 1 else ''} "
            f"aggregated ({', '.join(sites)}); server peak memory {peak_bytes / 2**30:.2f} GiB")


class RoundStats:
    def __init__(self, controller):
        self.controller = controller
        self.memory = PeakMemory()
        self._t0 = None
        self.metrics = {}

    def round_started(self):
        self._t0 = time.monotonic()
        self.metrics = {}
        self.memory.reset()

    def aggregated(self, metrics):
        self.metrics = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}

    def round_done(self, rnd: int, total_rounds: int, sites: list) -> dict:
        """rnd is 0-based (FedAvg's current_round); total_rounds counts resumed rounds too."""
        if self._t0 is None:
            return {}
        values = {"system/round_duration_s": time.monotonic() - self._t0,
                  "system/server_peak_memory_bytes": self.memory.peak_bytes()}
        values.update({f"global/{k}": v for k, v in self.metrics.items()})
        self.memory.stop()
        self._t0 = None
        self.controller.info(summary_line(rnd + 1, total_rounds, values["system/round_duration_s"], sites,
                                          values["system/server_peak_memory_bytes"]))
        self._write(values, rnd)
        return values

    def _write(self, values: dict, step: int):
        """Fire the analytics event the server's TBAnalyticsReceiver records under the server's own name."""
        from nvflare.apis.analytix import ANALYTIC_EVENT_TYPE, AnalyticsDataType, LogWriterName
        from nvflare.apis.utils.analytix_utils import create_analytic_dxo, send_analytic_dxo

        for tag, value in values.items():
            dxo = create_analytic_dxo(tag=tag, value=float(value), data_type=AnalyticsDataType.SCALAR,
                                      writer=LogWriterName.TORCH_TB, global_step=step)
            send_analytic_dxo(self.controller, dxo=dxo, fl_ctx=self.controller.fl_ctx, event_type=ANALYTIC_EVENT_TYPE)
