"""What a round costs at this site, written to the job's TensorBoard next to the training metrics.

The FL client calls ``round_started`` when the global model arrives, wraps ``trainer.train()`` in ``training``,
and calls ``round_done`` with what it sends back. Tags (step = the round, 0-based like the training metrics):

  system/round_time_s              receiving the global model -> handing the result to NVFlare (seconds)
  system/received_bytes            tensor bytes of the global model received (fl_common.process_stats.payload_bytes)
  system/sent_bytes                tensor bytes of the result sent
  system/peak_memory_bytes         peak resident memory of the site's job process during the round (VmHWM)
  system/train_tokens_per_s        non-padding tokens trained in the round (TRL's num_tokens) / seconds in
                                   trainer.train(); not written by exchange-only jobs
  system/gpu_peak_memory_bytes     GPU only: torch.cuda.max_memory_reserved during the round (what the caching
                                   allocator held on the device)
  system/gpu_utilization_percent   GPU only, where nvidia-smi is present: mean of its utilization.gpu, sampled
                                   every ``gpu_sample_s`` seconds during the round

They travel as every other metric of the site (nvflare.client.tracking.SummaryWriter -> the server's
TBAnalyticsReceiver): workspace/tb_events/<site>/ of the downloaded result.
"""

import shutil
import subprocess
import threading
import time

from fl_common.process_stats import PeakMemory, payload_bytes

PREFIX = "system/"


def gpu_uuid():
    """NVML's id of the GPU torch trains on ("GPU-..."), or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    uuid = str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
    return uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"


def nvidia_smi_utilization(uuid: str):
    """utilization.gpu (percent) of one GPU now, or None where nvidia-smi is missing or fails."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    run = subprocess.run([smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", uuid],
                         capture_output=True, text=True, timeout=10)
    try:
        return float(run.stdout.strip().splitlines()[0])
    except (IndexError, ValueError):
        return None


class RoundMeter:
    def __init__(self, writer, gpu: str = "auto", gpu_sample_s: float = 2.0, utilization=nvidia_smi_utilization):
        """
        Args:
            writer: anything with add_scalar(tag, value, step) (NVFlare's tracking SummaryWriter).
            gpu: the NVML id of the site's GPU, None for CPU, "auto" to ask torch.
            gpu_sample_s: seconds between utilisation samples.
            utilization: f(gpu id) -> percent or None (nvidia-smi by default).
        """
        self.writer = writer
        self.gpu = gpu_uuid() if gpu == "auto" else gpu
        self.gpu_sample_s = gpu_sample_s
        self.utilization = utilization
        self.memory = PeakMemory()
        self.round = None
        self.values = {}
        self._t0 = None
        self._samples, self._stop = [], None

    def round_started(self, rnd: int, received_params):
        self.round, self._t0 = rnd, time.monotonic()
        self.values = {"received_bytes": payload_bytes(received_params)}
        self.memory.reset()
        if self.gpu:
            import torch

            torch.cuda.reset_peak_memory_stats()
            self._samples, self._stop = [], threading.Event()
            threading.Thread(target=self._sample_gpu, args=(self._stop, self._samples), daemon=True,
                             name="gpu-utilization").start()

    def _sample_gpu(self, stop, samples):
        while not stop.is_set():
            value = self.utilization(self.gpu)
            if value is None:
                return
            samples.append(value)
            stop.wait(self.gpu_sample_s)

    def training(self, trainer):
        """Context manager around trainer.train(): the round's training tokens per second."""
        meter = self

        class _Training:
            def __enter__(self):
                self.tokens, self.t0 = trained_tokens(trainer), time.monotonic()

            def __exit__(self, *exc):
                seconds, tokens = time.monotonic() - self.t0, trained_tokens(trainer)
                if exc[0] is None and tokens is not None and self.tokens is not None and seconds > 0:
                    meter.values["train_tokens_per_s"] = (tokens - self.tokens) / seconds
                return False

        return _Training()

    def round_done(self, sent_params) -> dict:
        """Write the round's metrics; returns them ({name without the prefix: value})."""
        values = dict(self.values, sent_bytes=payload_bytes(sent_params),
                      peak_memory_bytes=self.memory.peak_bytes(), round_time_s=time.monotonic() - self._t0)
        self.memory.stop()
        if self.gpu:
            import torch

            values["gpu_peak_memory_bytes"] = torch.cuda.max_memory_reserved()
            if self._stop is not None:
                self._stop.set()
            if self._samples:
                values["gpu_utilization_percent"] = sum(self._samples) / len(self._samples)
        for name, value in values.items():
            self.writer.add_scalar(PREFIX + name, float(value), self.round)
        return values


def trained_tokens(trainer):
    """Non-padding tokens the trainer has trained on so far (TRL's SFTTrainer counts them as num_tokens)."""
    total = getattr(trainer, "_total_train_tokens", None)
    if total is not None:
        return float(total)
    counts = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
    return float(counts[-1]) if counts else None
