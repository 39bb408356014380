"""What one process costs per round, measured the same way at the sites and on the server.

* ``PeakMemory``: the process's peak resident memory (Linux VmHWM, bytes) since the last ``reset()``. The reset
  writes "5" to /proc/self/clear_refs (the kernel's documented way to reset the peak RSS of a process, allowed for
  the process itself); where that is refused, peaks are sampled every ``sample_s`` seconds instead.
* ``payload_bytes``: the bytes of the tensors in a params dict (what the model exchange carries, without the
  wire format's framing or TLS).
"""

import threading

STATUS = "/proc/self/status"
CLEAR_REFS = "/proc/self/clear_refs"


def _status_kib(field: str) -> int:
    """A `VmXxx:  N kB` field of /proc/self/status, in KiB (0 where there is no such file: not Linux)."""
    try:
        with open(STATUS) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


class PeakMemory:
    """Peak resident memory of this process between ``reset()`` and ``peak_bytes()``."""

    def __init__(self, sample_s: float = 0.5):
        self.sample_s = sample_s
        self._sampled = 0
        self._stop = None
        self.exact = True  # False when the kernel refused the reset and peaks are sampled

    def reset(self):
        self.stop()
        try:
            with open(CLEAR_REFS, "w") as f:
                f.write("5")
            self.exact = True
            return
        except OSError:
            self.exact = False
        self._sampled = rss_bytes()
        self._stop = threading.Event()
        threading.Thread(target=self._sample, args=(self._stop,), daemon=True, name="peak-memory").start()

    def _sample(self, stop):
        while not stop.wait(self.sample_s):
            self._sampled = max(self._sampled, rss_bytes())

    def peak_bytes(self) -> int:
        if self.exact:
            return _status_kib("VmHWM") * 1024
        return max(self._sampled, rss_bytes())

    def stop(self):
        if self._stop is not None:
            self._stop.set()
            self._stop = None


def payload_bytes(params) -> int:
    """Sum of ``nbytes`` of the tensors (torch or numpy) in a params dict; other values count 0."""
    return sum(int(v.nbytes) for v in (params or {}).values() if isinstance(getattr(v, "nbytes", None), int))
