"""Large tensors in row blocks (app_code/tensor_parts.py): small messages on the wire, whole tensors at both ends."""

import pytest
import torch

from fl_common.tensor_parts import join_parts, split_large

PART_MIB = 0.05  # 52 KiB blocks, so that small test tensors split
PART_BYTES = int(PART_MIB * 2**20)


def _params():
    g = torch.Generator().manual_seed(0)
    return {
        "wte": torch.randn(1000, 64, generator=g),  # 256 KB: the large one, 5 blocks
        "h.0.w": torch.randn(16, 16, generator=g),  # small: stays whole
        "emb16": torch.randn(900, 64, generator=g).bfloat16(),  # 115 KB in bf16
        "flat": torch.randn(40000, generator=g),  # 1-D, 160 KB
        "ids": torch.arange(30000),  # int64, 240 KB
        "step": torch.tensor(3),
    }


def test_blocks_are_bounded_views_and_join_back_bit_exact_in_order():
    params = _params()
    parts = split_large(params, PART_MIB)
    assert "h.0.w" in parts and "step" in parts and "wte" not in parts
    wte_parts = [k for k in parts if k.startswith("wte#part")]
    assert wte_parts == [f"wte#part{i}of5" for i in range(5)]
    for key, block in parts.items():
        if "#part" in key:
            assert block.numel() * block.element_size() <= PART_BYTES, key
            assert block.is_contiguous()
    # Views: the sender adds no copy of the model.
    assert parts["wte#part3of5"].untyped_storage().data_ptr() == params["wte"].untyped_storage().data_ptr()

    joined = join_parts(parts)
    assert list(joined) == list(params)
    for key, value in params.items():
        assert joined[key].dtype == value.dtype and torch.equal(joined[key], value), key


def test_nothing_large_or_part_mib_0_leaves_params_as_they_are():
    small = {"w": torch.zeros(4, 4), "n": 3}
    assert split_large(small, PART_MIB) is small
    params = _params()
    assert split_large(params, 0) is params
    assert join_parts(params) is params


def test_a_missing_block_is_named():
    parts = split_large(_params(), PART_MIB)
    del parts["wte#part2of5"]
    with pytest.raises(ValueError, match=r"'wte' arrived incomplete: parts \[2\] of 5 missing"):
        join_parts(parts)


def test_blocks_cross_nvflares_download_to_disk_as_small_items_and_join_from_the_lazy_dict(tmp_path):
    """The sites' upload path with disk offload: NVFlare's TensorDownloadable (one item per key) into its
    DiskTensorConsumer, whose LazyTensorDict the join loads block by block."""
    from nvflare.app_opt.pt.lazy_tensor_dict import LazyTensorDict
    from nvflare.app_opt.pt.tensor_downloader import DiskTensorConsumer, TensorDownloadable
    from nvflare.fuel.f3.streaming.download_service import ProduceRC

    params = _params()
    parts = split_large(params, PART_MIB)
    sender = TensorDownloadable(parts, 2 * 2**20)
    consumer, state, largest = DiskTensorConsumer(str(tmp_path)), {}, 0
    while True:
        rc, items, state = sender.produce(state, "server")
        if rc == ProduceRC.EOF:
            break
        largest = max([largest] + [len(item) for item in items])
        consumer.consume("ref", state, items)
    received = LazyTensorDict(key_to_file=consumer.result, temp_dir=str(tmp_path))
    assert largest <= PART_BYTES + 1024  # a block plus its safetensors header
    whole = max(v.numel() * v.element_size() for v in params.values())
    assert largest < whole / 2

    joined = join_parts(received)
    assert list(joined) == list(params)
    assert all(torch.equal(joined[k], v) for k, v in params.items())


def test_fedavg_averages_the_blocks_and_hands_back_whole_tensors():
    from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

    from test_exchange_options import _controller

    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(1000, 64, generator=g), torch.randn(1000, 64, generator=g)
    c = _controller("float32")
    for site, w, steps in (("site-1", a, 3), ("site-2", b, 7)):
        result = FLModel(params=split_large({"wte": w, "bias": torch.ones(3)}, PART_MIB),
                         params_type=ParamsType.FULL, meta={"client_name": site, "NUM_STEPS_CURRENT_ROUND": steps})
        assert c._aggregate_one_result(result)
    aggregated = c._get_aggregated_result()
    assert list(aggregated.params) == ["wte", "bias"]
    assert torch.allclose(aggregated.params["wte"], (a * 3 + b * 7) / 10, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("broadcast", ["shared", "per-site"])
def test_the_controller_sends_blocks_and_leaves_the_global_model_whole(controller, broadcast):
    from nvflare.app_common.abstract.fl_model import FLModel

    controller.broadcast_mode, controller.part_mib = broadcast, PART_MIB
    params = {k: v for k, v in _params().items() if k != "emb16"}  # float32 out: the bf16 one would be cast first
    model = FLModel(params=params, current_round=0)
    controller.send_model(data=model, targets=["site-1", "site-2"], callback=lambda r: True)
    (task,) = controller.sent
    assert sorted(task["params"]) == sorted(split_large(params, PART_MIB))
    assert model.params is params and "wte" in model.params
    controller._end_shared_broadcast()
