"""Large tensors cross the wire as row blocks of at most PART_BYTES, joined again on arrival.

NVFlare's download sends each item whole in one message, and a receiver holds a message in memory (stream buffer,
then the decoded bytes) until the disk offload writes it. GPT-2's largest tensor, the tied wte (154 MB of 498 MB),
is the first item of every site's result, so the sites' concurrent uploads all land on the server at once: about
two wte copies per site, most of the server's growth per added site. Split into blocks, each message is small.

The blocks are views on the sending side (no copy), keyed ``<name>#part<i>of<n>``; FedAvg averages them like any
other tensor and the controller joins them after aggregation, the sites when they receive the global model.
"""

import re

PART_MIB = 16.0  # MiB; an item this size still travels as a FOBS blob (above its 10 MB datum threshold)
_PART = re.compile(r"^(?P<name>.+)#part(?P<index>\d+)of(?P<count>\d+)$")


def split_large(params: dict, part_mib: float = PART_MIB) -> dict:
    """``params`` with every tensor over ``part_mib`` MiB replaced by contiguous row blocks (views) of at most that
    (one row at least); ``params`` itself when nothing is that large or part_mib is 0."""
    import torch

    part_bytes = int(part_mib * 2**20)
    out, split = {}, False
    for key, value in params.items():
        size = value.numel() * value.element_size() if torch.is_tensor(value) else 0
        if part_bytes <= 0 or size <= part_bytes or value.dim() == 0 or value.shape[0] < 2:
            out[key] = value
            continue
        value, split = value.contiguous(), True
        blocks = torch.split(value, max(1, part_bytes // (size // value.shape[0])), dim=0)
        for i, block in enumerate(blocks):
            out[f"{key}#part{i}of{len(blocks)}"] = block
    return out if split else params


def join_parts(params: dict) -> dict:
    """The inverse of split_large, in the original key order; lazy (disk-offloaded) blocks are loaded here."""
    import torch

    blocks, order = {}, []
    for key, value in params.items():
        m = _PART.match(key)
        if m is None:
            order.append(key)
            continue
        name = m["name"]
        if name not in blocks:
            blocks[name] = [None] * int(m["count"])
            order.append(name)
        blocks[name][int(m["index"])] = value
    if not blocks:
        return params
    out = {}
    for key in order:
        if key not in blocks:
            out[key] = params[key]
            continue
        missing = [i for i, b in enumerate(blocks[key]) if b is None]
        if missing:
            raise ValueError(f"tensor {key!r} arrived incomplete: parts {missing} of {len(blocks[key])} missing")
        out[key] = _whole(blocks[key])
        if out[key] is None:
            out[key] = torch.cat([_loaded(b) for b in blocks[key]], dim=0)
    return out


def base_name(key: str) -> str:
    """The tensor a key names: ``key`` itself, or the tensor whose row block it is."""
    m = _PART.match(key)
    return key if m is None else m["name"]


def _whole(blocks: list):
    """The tensor the blocks are consecutive views of, covering it all (the mean written into the previous global
    model, in_place_mean.py): it already is the joined tensor, no copy needed. None for anything else."""
    import torch

    base = getattr(blocks[0], "_base", None)
    if base is None or not base.is_contiguous():
        return None
    offset = base.storage_offset()
    for b in blocks:
        if (not torch.is_tensor(b) or b._base is not base or b.storage_offset() != offset or not b.is_contiguous()
                or b.shape[1:] != base.shape[1:]):
            return None
        offset += b.numel()
    return base if offset - base.storage_offset() == base.numel() else None


def _loaded(value):
    return value.materialize() if callable(getattr(value, "materialize", None)) else value
