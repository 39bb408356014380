"""One download of the global model for all the sites of a round (transfers offload and memory).

NVFlare 2.9 FOBS-serializes a broadcast task's reply once per site: every reply opens its own download transaction
(ViaDownloaderDecomposer, num_receivers=1) that produces its own safetensors bytes, and items under FOBS's 10 MB
datum threshold are copied again into each reply's msgpack body, so the server's peak grows by about half a model
copy per site. Here the controller opens one transaction for the round's sites and sends them references into it,
in the wire format NVFlare's pass-through already emits (LazyDownloadRef): each item is produced once, the other
sites take it from the cache, and the sites' stock consumers (in memory or to disk) read it unchanged.

Private NVFlare APIs used (pinned nvflare==2.9.0): LazyDownloadRef, re-emitted by LazyDownloadRefDecomposer
(fuel/utils/fobs/decomposers/via_downloader.py); TensorDownloadable (app_opt/pt/tensor_downloader.py) and the
CacheableObject._get_item/produce hooks it inherits (fuel/f3/streaming/cacheable.py); dots.TENSOR_DOWNLOAD.
"""

import threading

import torch
from safetensors.torch import save as save_tensors

from nvflare.app_opt.pt.decomposers import TensorDecomposer
from nvflare.app_opt.pt.tensor_downloader import TensorDownloadable
from nvflare.fuel.f3.streaming.download_service import ProduceRC
from nvflare.fuel.f3.streaming.obj_downloader import ObjectDownloader
from nvflare.fuel.utils import fobs
from nvflare.fuel.utils.fobs import dots
from nvflare.fuel.utils.fobs.decomposers.via_downloader import LazyDownloadRef

# Above FOBS's 10 MB datum threshold an item travels as a blob that references the cached bytes; below it, the
# item would be copied into every site's msgpack reply.
GROUP_BYTES = 16 * 2**20
CHUNK_BYTES = 2 * 2**20  # NVFlare's default download chunk (tensor_downloader._TWO_MB); a bigger item is one chunk


def group_keys(tensors: dict, group_bytes: int = GROUP_BYTES) -> list:
    """Consecutive keys packed into groups of at least ``group_bytes``; a smaller remainder joins the last group."""
    groups, current, size = [], [], 0
    for key, t in tensors.items():
        current.append(key)
        size += t.numel() * t.element_size()
        if size >= group_bytes:
            groups.append(current)
            current, size = [], 0
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    return groups


class SharedTensorDownloadable(TensorDownloadable):
    """The round's tensors as safetensors items of >= GROUP_BYTES, each produced once for all receivers.

    CacheableObject produces an item outside its lock, so receivers asking at once would each serialize it; a lock
    per item makes the others wait for the first and take the cached bytes. No prefetch: a prefetched item is held
    outside the cache, once more per receiver that triggers it.
    """

    def __init__(self, tensors: dict, group_bytes: int = GROUP_BYTES, max_chunk_size: int = CHUNK_BYTES):
        self.groups = group_keys(tensors, group_bytes)  # before super(): CacheableObject sizes its cache by them
        super().__init__(tensors, max_chunk_size)
        self._item_locks = [threading.Lock() for _ in self.groups]
        self._stats_lock = threading.Lock()
        self.produced_items, self.produced_bytes, self.served = 0, 0, set()
        self.cache_peak_bytes = 0  # what the receivers' spread costs: items produced, not yet taken by all

    def get_item_count(self) -> int:
        return len(self.groups)

    def get_item_size(self, index: int):
        base = self.base_obj
        return None if base is None else sum(base[k].numel() * base[k].element_size() for k in self.groups[index])

    def prefetch_item(self, index: int):
        pass

    def produce_item(self, index: int) -> bytes:
        base = self.base_obj
        if base is None:
            raise RuntimeError(f"item {index} requested after the broadcast was released")
        data = save_tensors(_own_storage({k: base[k] for k in self.groups[index]}))
        with self._stats_lock:
            self.produced_items += 1
            self.produced_bytes += len(data)
        return data

    def _get_item(self, index: int, requester: str) -> bytes:
        with self._item_locks[index]:
            data = super()._get_item(index, requester)
        with self.lock:
            cached = sum(len(d) for d, _ in self.cache or () if d is not None)
        with self._stats_lock:
            self.cache_peak_bytes = max(self.cache_peak_bytes, cached)
        return data

    def produce(self, state: dict, requester: str):
        rc, items, new_state = super().produce(state, requester)
        if rc == ProduceRC.EOF:  # this receiver has every item
            with self._stats_lock:
                self.served.add(requester)
        return rc, items, new_state


def _own_storage(group: dict) -> dict:
    """safetensors refuses tensors that share memory within one file (tied weights, views): copy those."""
    seen, out = set(), {}
    for key, t in group.items():
        ptr = t.untyped_storage().data_ptr()
        out[key] = (t.clone() if ptr in seen else t).contiguous()
        seen.add(ptr)
    return out


class SharedBroadcast:
    """One download transaction on the server cell serving ``params`` to ``num_receivers`` sites."""

    def __init__(self, cell, params: dict, num_receivers: int, timeout: float):
        fobs.register(TensorDecomposer)  # the handler LazyDownloadRef's dot routes to
        names = list(params)
        self.item_ids = {k: f"T{i}" for i, k in enumerate(names)}
        self.downloadable = SharedTensorDownloadable({self.item_ids[k]: params[k] for k in names})
        self.num_receivers = num_receivers
        self.model_bytes = sum(t.numel() * t.element_size() for t in params.values())
        fqcn = cell.get_fqcn()
        self._downloader = ObjectDownloader(cell=cell, timeout=timeout, num_receivers=num_receivers)
        try:
            ref_id = self._downloader.add_object(self.downloadable)
        except Exception:
            self.close()
            raise
        self.refs = {k: LazyDownloadRef(fqcn=fqcn, ref_id=ref_id, item_id=self.item_ids[k], dot=dots.TENSOR_DOWNLOAD)
                     for k in names}

    @staticmethod
    def supports(params) -> bool:
        return bool(params) and all(torch.is_tensor(v) for v in params.values())

    def summary(self) -> str:
        d = self.downloadable
        extra = d.produced_items - len(d.groups)
        again = f"; {extra} items produced more than once" if extra > 0 else ""
        return (f"served to {len(d.served)} sites from one shared download ({self.model_bytes / 1e6:.1f} MB in "
                f"{len(d.groups)} items{again}; at most {d.cache_peak_bytes / 1e6:.1f} MB cached at once)")

    def close(self):
        """End the transaction (a no-op once every receiver finished): its cache and tensors are released."""
        self._downloader.delete_transaction()
