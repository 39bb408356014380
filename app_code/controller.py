"""Server workflow: NVFlare's FedAvg, with rounds that end.

NVFlare's FedAvg sends each round's task with no timeout and waits for every sampled site. A site that dies
mid-round (container killed, host lost) comes back without the job, so the round, and the job, would wait forever.
Here each round waits at most ``round_timeout`` seconds for all sites, then aggregates what arrived if at least
``min_sites`` answered; with fewer, the job stops with a reason that names the silent sites.

With ``exchange_dtype="bfloat16"`` the global model travels to the sites as bfloat16 (half the bytes) while the
server keeps, aggregates and persists it in float32: every site result is upcast before NVFlare's weighted sum,
which would otherwise accumulate in the inputs' bfloat16 and hand the persistor a bfloat16 global model.
"""

import copy

from nvflare.app_common.workflows.fedavg import FedAvg


class FedAvgWithDeadline(FedAvg):
    def __init__(self, *args, round_timeout: int = 0, min_sites: int = 1, exchange_dtype: str = "float32",
                 **kwargs):
        """
        Args:
            round_timeout: seconds a round waits for the sites' results (0 = forever, NVFlare's behaviour).
            min_sites: fewest results a round may aggregate after the timeout; fewer stops the job.
            exchange_dtype: dtype of the floating tensors sent to the sites (float32 or bfloat16).
        """
        super().__init__(*args, **kwargs)
        self.round_timeout = round_timeout
        self.min_sites = min_sites
        self.exchange_dtype = exchange_dtype
        self._targets, self._answered = [], set()

    def send_model(self, task_name="train", data=None, targets=None, min_responses=None, timeout=0, callback=None):
        self._targets, self._answered = list(targets or []), set()
        data = cast_model(data, self.exchange_dtype)
        super().send_model(task_name=task_name, data=data, targets=targets, min_responses=min_responses,
                           timeout=timeout or self.round_timeout, callback=callback)

    def _aggregate_one_result(self, result) -> bool:
        site = (result.meta or {}).get("client_name")
        self._answered.add(site)
        on_disk = sum(callable(getattr(v, "materialize", None)) for v in (result.params or {}).values())
        if on_disk:  # NVFlare's tensor disk offload says nothing itself
            self.info(f"result from {site}: {on_disk} of {len(result.params)} tensors spooled to disk (offload)")
        if self.exchange_dtype != "float32":
            upcast_params(result)
        return super()._aggregate_one_result(result)

    def _get_aggregated_result(self):
        silent = sorted(set(self._targets) - self._answered)
        if silent:
            summary = (f"round {self.current_round + 1}: {self._received_count} of {len(self._targets)} sites "
                       f"answered within {self.round_timeout}s; no result from {', '.join(silent)}")
            if self._received_count < self.min_sites:
                reason = f"{summary} (min_sites={self.min_sites}): stopping the job"
                self.panic(reason)
                raise RuntimeError(reason)
            self.warning(f"{summary}; aggregating the others")
        return super()._get_aggregated_result()


def cast_model(model, dtype: str):
    """A shallow copy of the FLModel whose floating params are ``dtype``; the model itself is left as it is."""
    import torch

    to = getattr(torch, dtype)
    if model is None or not model.params or all(v.dtype == to for v in model.params.values()
                                                if torch.is_tensor(v) and v.is_floating_point()):
        return model
    sent = copy.copy(model)
    sent.params = {k: v.to(to) if torch.is_tensor(v) and v.is_floating_point() else v
                   for k, v in model.params.items()}
    return sent


def _float32(v):
    import torch

    return v.float() if torch.is_tensor(v) and v.is_floating_point() and v.dtype != torch.float32 else v


class _Upcast:
    """A lazy tensor reference (NVFlare's disk offload) that loads as float32 when the aggregation reads it."""

    def __init__(self, ref):
        self.ref = ref

    def materialize(self):
        return _float32(self.ref.materialize())


def upcast_params(result):
    """Make the result's low-precision floating tensors float32, one at a time (bounded memory). Tensors still
    on disk (disk offload) are upcast when NVFlare's aggregation loads them, one by one."""
    params = result.params or {}
    result.params = {k: _Upcast(v) if callable(getattr(v, "materialize", None)) else _float32(v)
                     for k, v in params.items()}
