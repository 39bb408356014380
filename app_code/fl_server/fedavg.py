"""Server workflow: NVFlare's FedAvg for models of hundreds of MB (LargeModelFedAvg).

What it adds to NVFlare's FedAvg, each switchable by its constructor argument (make_job.py sets them):

* rounds that end (``round_timeout``, ``min_sites``), below;
* bfloat16 on the wire (``exchange_dtype``);
* one shared download of the global model for all the round's sites (``broadcast_mode``, shared_broadcast.py);
* large tensors as row blocks both ways (``part_mib``, fl_common/tensor_parts.py);
* the round's mean written into the previous global model (``aggregation``, in_place_mean.py);
* the global held-out loss as the mean of the sites' losses weighted by their held-out rows (fl_common/held_out.py).

NVFlare's FedAvg sends each round's task with no timeout and waits for every sampled site. A site that dies
mid-round (container killed, host lost) comes back without the job, so the round, and the job, would wait forever.
Here each round waits at most ``round_timeout`` seconds for all sites, then aggregates what arrived if at least
``min_sites`` answered; with fewer, the job stops with a reason that names the silent sites.

With ``exchange_dtype="bfloat16"`` the global model travels to the sites as bfloat16 (half the bytes) while the
server keeps, aggregates and persists it in float32: every site result is upcast before NVFlare's weighted sum,
which would otherwise accumulate in the inputs' bfloat16 and hand the persistor a bfloat16 global model.

With ``broadcast_mode="shared"`` (the default) the round's sites download the global model from one shared
transaction instead of one serialization per site (shared_broadcast.py); "per-site" is NVFlare's own behaviour.
Only for FOBS streaming (transfers offload and memory): make_job passes "per-site" with the tensor streamers.

Tensors over ``part_mib`` MiB travel as row blocks both ways (tensor_parts.py); the aggregated result is
whole again before NVFlare updates, persists and sends the global model.

With the results offloaded to disk and full weights coming back, the round's mean is written into the previous
global model's tensors (in_place_mean.py) instead of a second model-sized sum: one model copy less on the server.
A job killed mid-round leaves its disk-offload spool behind; the next job removes it at its start (spool.py).
"""

import copy
import tempfile

from nvflare.app_common.abstract.fl_model import ParamsType
from nvflare.app_common.aggregators.weighted_aggregation_helper import WeightedAggregationHelper
from nvflare.app_common.workflows.fedavg import FedAvg

from fl_common.held_out import HeldOutMean
from fl_common.tensor_parts import PART_MIB, join_parts, split_large
from fl_server.in_place_mean import InPlaceMean
from fl_server import disk_guard, spool
from fl_server.round_stats import RoundStats
from fl_server.shared_broadcast import SharedBroadcast

# How FOBS streaming (offload, memory) sends each round's global model; the tensor streamers have their own way.
BROADCASTS = {
    "shared": "one download transaction for all the round's sites, each item serialized once "
              "(app_code/fl_server/shared_broadcast.py)",
    "per-site": "NVFlare's own: the task serialized for each site, one download per site",
}
AGGREGATIONS = {
    "in-place": "the round's mean written into the previous global model when results are on disk (offload) and no "
                "download reads it: one model copy less (app_code/fl_server/in_place_mean.py); otherwise NVFlare's sum",
    "nvflare": "NVFlare's running sum, a second model-sized copy next to the global model",
}


class LargeModelFedAvg(FedAvg):
    def __init__(self, *args, round_timeout: int = 0, min_sites: int = 1, exchange_dtype: str = "float32",
                 broadcast_mode: str = "shared", part_mib: float = PART_MIB, aggregation: str = "in-place", **kwargs):
        """
        Args:
            round_timeout: seconds a round waits for the sites' results (0 = forever, NVFlare's behaviour).
            min_sites: fewest results a round may aggregate after the timeout; fewer stops the job.
            exchange_dtype: dtype of the floating tensors sent to the sites (float32 or bfloat16).
            broadcast_mode: "shared" (one download for all the round's sites) or "per-site" (NVFlare's).
                Not "broadcast": that name is NVFlare's Controller.broadcast method.
            part_mib: tensors over this many MiB go to the sites as row blocks (tensor_parts.py; 0 = whole).
            aggregation: "in-place" or "nvflare" (AGGREGATIONS).
        """
        super().__init__(*args, **kwargs)
        if broadcast_mode not in BROADCASTS:
            raise ValueError(f"broadcast_mode must be one of {tuple(BROADCASTS)}, got {broadcast_mode!r}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {tuple(AGGREGATIONS)}, got {aggregation!r}")
        self.round_timeout = round_timeout
        self.min_sites = min_sites
        self.exchange_dtype = exchange_dtype
        self.broadcast_mode = broadcast_mode
        self.part_mib = part_mib
        self.aggregation = aggregation
        self._targets, self._answered, self._shared, self._into = [], set(), None, {}
        self.held_out = HeldOutMean()  # the round's held-out losses, weighted by held-out rows
        self.round_stats = RoundStats(self)  # the round's summary line and system metrics (round_stats.py)

    def run(self):
        lock = None
        if self.enable_tensor_disk_offload:
            lock = spool.hold(self.fl_ctx.get_job_id("job"))
            for path, size in spool.sweep():
                self.info(f"removed the disk-offload spool of a job that no longer runs: {path} "
                          f"({size / 1e6:.1f} MB)")
        watch = disk_guard.Watch(tempfile.gettempdir(), self.panic).start()  # the volume full: ends the job at once
        try:
            super().run()
        finally:  # abort, stop or error: the round's download must not outlive the job
            watch.stop()
            self._end_shared_broadcast()
            if lock is not None:
                spool.release(lock)

    def send_model(self, task_name="train", data=None, targets=None, min_responses=None, timeout=0, callback=None):
        self._targets, self._answered = list(targets or []), set()
        if full := disk_guard.shortage(tempfile.gettempdir(), disk_guard.round_need(data.params if data else {},
                                                                                    len(self._targets))):
            self.panic(full)
            raise RuntimeError(full)
        self.round_stats.round_started()
        self.held_out.reset()
        self._end_shared_broadcast()
        sent = cast = cast_model(data, self.exchange_dtype)
        sent = with_params(cast, lambda p: split_large(p, self.part_mib))
        timeout = timeout or self.round_timeout
        if self.broadcast_mode == "shared":
            sent = self._share(sent, timeout)
        # The round's mean may overwrite the global model once no download reads it: the shared one is closed
        # before aggregating; NVFlare's per-site downloads may outlive the round, unless they send a cast copy.
        self._into = {}
        if (self.aggregation == "in-place" and data is not None and data.params
                and (self._shared is not None or cast is not data)):
            self._into = {**data.params, **split_large(data.params, self.part_mib)}
        data = sent
        super().send_model(task_name=task_name, data=data, targets=targets, min_responses=min_responses,
                           timeout=timeout, callback=callback)

    def _share(self, model, timeout):
        """A shallow copy of the model whose params reference one download transaction for all the targets."""
        cell = _server_cell(getattr(self, "engine", None))
        if not cell or not self._targets or model is None or not SharedBroadcast.supports(model.params):
            self.info("broadcast: NVFlare's per-site serialization (no cell, no targets or non-tensor params)")
            return model
        # The transaction's idle timeout only backs up the deletion when the round ends: at least the round's
        # deadline (a day when rounds wait forever), so it cannot expire under a round still running.
        try:
            self._shared = SharedBroadcast(cell, model.params, len(self._targets),
                                           timeout=(timeout or 24 * 3600) + 60)
        except Exception as e:  # the round can still go out NVFlare's way
            self.warning(f"broadcast: shared download not created ({type(e).__name__}: {e}); sending per site")
            return model
        self._shared_round = self.current_round
        sent = copy.copy(model)
        sent.params = self._shared.refs
        return sent

    def _end_shared_broadcast(self):
        shared, self._shared = self._shared, None
        if shared is not None:
            self.info(f"round {self._shared_round + 1}: global model {shared.summary()}")
            shared.close()

    def _aggregate_one_result(self, result) -> bool:
        site = (result.meta or {}).get("client_name")
        self._answered.add(site)
        if result.params:  # NVFlare skips an empty result
            self.held_out.add(site, result.metrics)
        on_disk = sum(callable(getattr(v, "materialize", None)) for v in (result.params or {}).values())
        if on_disk:  # NVFlare's tensor disk offload says nothing itself
            self.info(f"result from {site}: {on_disk} of {len(result.params)} tensors spooled to disk (offload)")
        if self.exchange_dtype != "float32":
            upcast_params(result)
        if (self._into and self.enable_tensor_disk_offload and result.params_type == ParamsType.FULL
                and not self.aggregator and type(self._aggr_helper) is WeightedAggregationHelper
                and not self._aggr_helper.get_history()):
            self.info("aggregating into the previous global model's tensors at the round's end (no second copy)")
            self._aggr_helper = InPlaceMean(self._into, exclude_vars=self.exclude_vars)
        return super()._aggregate_one_result(result)

    def _get_aggregated_result(self):
        self._end_shared_broadcast()
        silent = sorted(set(self._targets) - self._answered)
        if silent:
            summary = (f"round {self.current_round + 1}: {self._received_count} of {len(self._targets)} sites "
                       f"answered within {self.round_timeout}s; no result from {', '.join(silent)}")
            if self._received_count < self.min_sites:
                reason = f"{summary} (min_sites={self.min_sites}): stopping the job"
                self.panic(reason)
                raise RuntimeError(reason)
            self.warning(f"{summary}; aggregating the others")
        try:
            result = super()._get_aggregated_result()
        finally:  # the previous global model must not stay pinned once the new one replaces it
            self._into = {}
        if result.params:
            result.params = join_parts(result.params)
        result.metrics = self.held_out.apply(result.metrics)  # before AFTER_AGGREGATION: round_metrics.jsonl
        self.round_stats.aggregated(result.metrics)
        return result

    def _maybe_cleanup_memory(self):
        # FedAvg calls this last in every round, after the round's global model is saved.
        super()._maybe_cleanup_memory()
        self.round_stats.round_done(self.current_round, self.start_round + self.num_rounds,
                                    sorted(s for s in self._answered if s))


def _server_cell(engine):
    """The job cell the sites' get_task replies go out on (as NVFlare's tensor disk offload finds it)."""
    if engine is None:
        return None
    run_manager = getattr(engine, "run_manager", None)
    return getattr(run_manager, "cell", None) or engine.get_cell()


def with_params(model, transform):
    """A shallow copy of the FLModel with transform(params); the model itself is left as it is."""
    if model is None or not model.params:
        return model
    sent = copy.copy(model)
    sent.params = transform(model.params)
    return sent


def cast_model(model, dtype: str):
    """A shallow copy of the FLModel whose floating params are ``dtype``; the model itself is left as it is."""
    import torch

    to = getattr(torch, dtype)
    if model is None or not model.params or all(v.dtype == to for v in model.params.values()
                                                if torch.is_tensor(v) and v.is_floating_point()):
        return model
    return with_params(model, lambda params: {k: v.to(to) if torch.is_tensor(v) and v.is_floating_point() else v
                                              for k, v in params.items()})


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
