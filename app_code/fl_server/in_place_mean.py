"""FedAvg's weighted mean written into the previous global model's own tensors: one model copy on the server.

NVFlare's in-time aggregation keeps a running sum that is a second full model next to the global model the round
started from, and the previous global cannot be dropped before the new one replaces it: two model copies at every
round's end (0.5 GB for the 124M GPT-2, 3 GB for gpt2-large). With tensor disk offload the sites' results wait on
disk anyway, so here they are only noted as they arrive and summed at the round's end, tensor by tensor, into the
previous global's tensors: by then every site has its copy (the round's download is closed) and the model selector
has saved it if it was the best (BEFORE_AGGREGATION fires first). The order of the sum is the arrival order, as in
NVFlare's helper, so the mean is bit-identical.

The cost moves to disk: each result's spool files stay until the round's end (sites x model bytes in TMPDIR),
where NVFlare's sum frees them result by result.

Used by the controller only when that holds: results offloaded to disk, full weights (not updates), and a global
model no download still reads. A result tensor that arrives in memory is summed at once, as NVFlare's helper does.
"""

from nvflare.app_common.aggregators.weighted_aggregation_helper import WeightedAggregationHelper


class InPlaceMean(WeightedAggregationHelper):
    def __init__(self, into: dict, exclude_vars: str = None):
        """
        Args:
            into: key -> tensor the mean of that key may overwrite (the previous global model, its row blocks).
            exclude_vars: regex of keys left out, as NVFlare's helper.
        """
        super().__init__(exclude_vars=exclude_vars)
        self.into = usable_targets(into)
        self._summed = {}  # key -> running sum of the results that arrived in memory

    def add(self, data, weight, contributor_name, contribution_round):
        with self.lock:
            for k, v in data.items():
                if self.exclude_vars is not None and self.exclude_vars.search(k):
                    self.skipped_keys.add(k)
                    continue
                self.key_contribution_counts[k] = self.key_contribution_counts.get(k, 0) + 1
                self.counts[k] = self.counts.get(k, 0) + weight
                self.total.setdefault(k, [])
                if callable(getattr(v, "materialize", None)):
                    self.total[k].append((v, weight))  # on disk until the round ends
                elif k in self._summed:
                    self._summed[k].add_(v, alpha=weight)
                else:
                    self._summed[k] = v.mul(weight)
            self.history.append({"contributor_name": contributor_name, "round": contribution_round,
                                 "weight": weight})

    def get_result(self):
        with self.lock:
            mean = {}
            for k, waiting in self.total.items():
                acc = self._summed.pop(k, None)
                for ref, weight in waiting:
                    v = ref.materialize()
                    if acc is not None:
                        acc.add_(v, alpha=weight)
                    elif _fits(self.into.get(k), v):
                        acc = self.into[k].copy_(v).mul_(weight)
                    else:
                        acc = v.mul(weight)
                    del v
                waiting.clear()  # the references go with the sum: their files are deleted as NVFlare's are
                mean[k] = acc.div_(self.counts[k])
            self.last_aggregation_stats = self._compute_aggregation_stats()
            self.reset_stats()
            self._summed = {}
            return mean


def usable_targets(into: dict) -> dict:
    """The tensors of ``into`` that may be overwritten: floating, contiguous, and sharing memory with no tensor
    outside their own key's row blocks (tied weights would be overwritten through their alias)."""
    import torch

    from fl_common.tensor_parts import base_name

    owner, out = {}, {}
    for k, t in into.items():
        if not (torch.is_tensor(t) and t.is_floating_point() and t.is_contiguous()):
            continue
        ptr = t.untyped_storage().data_ptr()
        if owner.setdefault(ptr, base_name(k)) != base_name(k):
            owner[ptr] = None  # two tensors share this memory: neither is overwritten
        out[k] = t
    return {k: t for k, t in out.items() if owner[t.untyped_storage().data_ptr()] is not None}


def _fits(target, v) -> bool:
    return target is not None and target.shape == v.shape and target.dtype == v.dtype and target.device == v.device
