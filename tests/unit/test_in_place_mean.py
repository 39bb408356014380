"""The round's mean written into the previous global model (app_code/in_place_mean.py): one model copy on the server,
the same mean as NVFlare's helper, and never over a tensor that a download or an alias still reads."""

import pytest
import torch
from safetensors.torch import save_file

from fl_server.in_place_mean import InPlaceMean
from fl_common.tensor_parts import join_parts, split_large

PART_MIB = 0.05  # 52 KiB row blocks, so that the test's wte splits


def _global():
    g = torch.Generator().manual_seed(3)
    return {"wte": torch.randn(1000, 64, generator=g), "ln.w": torch.randn(64, generator=g),
            "h.0.w": torch.randn(32, 32, generator=g)}


def _site(seed):
    g = torch.Generator().manual_seed(seed)
    return {k: v + torch.randn(v.shape, generator=g) * 0.01 for k, v in _global().items()}


def _on_disk(params, folder):
    """params as NVFlare's tensor disk offload hands them to the workflow: lazy references to safetensors files."""
    from nvflare.app_opt.pt.lazy_tensor_dict import LazyTensorDict

    folder.mkdir()
    files = {}
    for i, (k, v) in enumerate(params.items()):
        path = str(folder / f"{i}.safetensors")
        save_file({k: v.contiguous()}, path)
        files[k] = (path, k)
    lazy = LazyTensorDict(files, str(folder))
    return {k: lazy.make_lazy_ref(k) for k in params}


def _nvflare_mean(results):
    """NVFlare's in-time helper on the same (in-memory) results, joined: the reference."""
    from nvflare.app_common.aggregators.weighted_aggregation_helper import WeightedAggregationHelper

    helper = WeightedAggregationHelper()
    for i, (params, weight) in enumerate(results):
        helper.add(params, weight, f"site-{i + 1}", 0)
    return join_parts(helper.get_result())


def test_mean_is_nvflares_bit_for_bit_and_lands_in_the_global_models_own_tensors(tmp_path):
    old = _global()
    into = {**old, **split_large(old, PART_MIB)}
    results = [(split_large(_site(s), PART_MIB), w) for s, w in ((1, 3.0), (2, 7.0), (3, 1.0))]
    expected = _nvflare_mean(results)

    mean = InPlaceMean(into)
    for i, (params, weight) in enumerate(results):
        mean.add(_on_disk(params, tmp_path / f"site-{i}"), weight, f"site-{i + 1}", 0)
    assert mean.get_aggregation_stats()["accepted_contributions"] == 3
    joined = join_parts(mean.get_result())

    assert list(joined) == list(expected)
    for k in expected:
        assert torch.equal(joined[k], expected[k]), k
        assert joined[k] is old[k], f"{k}: a new tensor, not the previous global's"  # no second copy, no join copy


def test_results_in_memory_are_summed_as_they_arrive_and_give_the_same_mean(tmp_path):
    old = _global()
    results = [(_site(4), 2.0), (_site(5), 5.0)]
    expected = _nvflare_mean(results)

    mean = InPlaceMean(dict(old))
    mean.add(results[0][0], results[0][1], "site-1", 0)  # in memory: summed now, not held
    mean.add(_on_disk(results[1][0], tmp_path / "s2"), results[1][1], "site-2", 0)
    assert set(mean._summed) == set(old)
    out = mean.get_result()
    assert all(torch.equal(out[k], expected[k]) for k in expected)
    assert all(out[k] is not old[k] for k in old)  # the in-memory sum came first: it is the result


def test_tensors_sharing_memory_with_another_key_are_not_overwritten(tmp_path):
    wte = torch.randn(50, 8)
    old = {"wte": wte, "lm_head": wte, "w": torch.randn(8, 8), "ids": torch.arange(8)}
    keep = {k: v.clone() for k, v in old.items()}
    site = {"wte": wte + 1, "lm_head": wte + 1, "w": old["w"] + 1, "ids": torch.arange(8)}
    mean = InPlaceMean(dict(old))
    mean.add(_on_disk(site, tmp_path / "s1"), 1.0, "site-1", 0)
    out = mean.get_result()
    assert torch.equal(old["wte"], keep["wte"]) and out["wte"] is not wte  # tied: left alone
    assert torch.equal(old["ids"], keep["ids"])  # not floating: left alone
    assert out["w"] is old["w"] and torch.equal(out["w"], keep["w"] + 1)


# --- in the workflow (controller.py) -------------------------------------------------------------------------------

def _prepare(controller, broadcast):
    from nvflare.app_common.aggregators.weighted_aggregation_helper import WeightedAggregationHelper

    controller.broadcast_mode, controller.part_mib, controller.enable_tensor_disk_offload = broadcast, PART_MIB, True
    controller._aggr_helper, controller._aggr_metrics_helper = WeightedAggregationHelper(), WeightedAggregationHelper()
    controller._all_metrics, controller._received_count, controller._expected_count = True, 0, 2
    controller._params_type, controller._site_metric_weights = None, {}


def _round(controller, tmp_path, params_type):
    from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

    old = _global()
    keep = {k: v.clone() for k, v in old.items()}
    controller.send_model(data=FLModel(params=old, params_type=ParamsType.FULL, current_round=0),
                          targets=["site-1", "site-2"], callback=lambda r: True)
    results = [(split_large(_site(s), PART_MIB), w) for s, w in ((6, 3), (7, 7))]
    for i, (params, steps) in enumerate(results):
        assert controller._aggregate_one_result(FLModel(
            params=_on_disk(params, tmp_path / f"site-{i + 1}"), params_type=getattr(ParamsType, params_type),
            meta={"client_name": f"site-{i + 1}", "NUM_STEPS_CURRENT_ROUND": steps}))
    return old, keep, _nvflare_mean(results), controller._get_aggregated_result().params


def test_with_the_shared_download_the_round_writes_its_mean_into_the_global_model(controller, tmp_path):
    _prepare(controller, "shared")
    old, keep, expected, mean = _round(controller, tmp_path, "FULL")
    assert all(torch.equal(mean[k], expected[k]) for k in expected)
    assert all(mean[k] is old[k] for k in old)
    assert any("no second copy" in line for line in controller.logs)
    assert controller._into == {}  # the previous global is not pinned past the round


@pytest.mark.parametrize("broadcast, params_type, aggregation", [("per-site", "FULL", "in-place"),
                                                                  ("shared", "DIFF", "in-place"),
                                                                  ("shared", "FULL", "nvflare")])
def test_the_global_model_is_left_alone_when_a_download_may_read_it_results_are_updates_or_asked_so(
        controller, tmp_path, broadcast, params_type, aggregation):
    _prepare(controller, broadcast)
    controller.aggregation = aggregation
    old, keep, expected, mean = _round(controller, tmp_path, params_type)
    assert all(torch.equal(old[k], keep[k]) for k in old)  # NVFlare's per-site downloads may outlive the round
    assert all(torch.equal(mean[k], expected[k]) for k in expected)
    assert not any("no second copy" in line for line in controller.logs)


def test_an_unknown_aggregation_is_refused():
    from fl_server.fedavg import LargeModelFedAvg

    with pytest.raises(ValueError, match="aggregation must be one of"):
        LargeModelFedAvg(num_clients=2, aggregation="median")
