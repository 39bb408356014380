"""The shared broadcast (app_code/fl_server/shared_broadcast.py): the round's global model serialized once for all sites."""

import threading
import time

import pytest
import torch

from fl_server.shared_broadcast import GROUP_BYTES, SharedTensorDownloadable, group_keys

MB = 2**20


def _tensors():
    g = torch.Generator().manual_seed(0)
    t = {f"h.{i}.w": torch.randn(5 * MB // 4, generator=g) for i in range(10)}  # 10 x 5 MB fp32
    t["big"] = torch.randn(20 * MB // 4, generator=g)  # above the group size on its own
    t["bias"] = torch.randn(7, generator=g)
    t["half"] = torch.randn(33, generator=g).bfloat16()
    t["step"] = torch.tensor(3)
    return t


def _bytes(tensors, keys):
    return sum(tensors[k].numel() * tensors[k].element_size() for k in keys)


def test_items_are_consecutive_groups_of_at_least_16_mb():
    tensors = _tensors()
    groups = group_keys(tensors)
    assert [k for g in groups for k in g] == list(tensors)  # every key once, in order
    assert len(groups) >= 3
    assert all(_bytes(tensors, g) >= GROUP_BYTES for g in groups), [_bytes(tensors, g) for g in groups]
    # A group closes as soon as it reaches the size: items stay near 16 MB instead of growing into one.
    assert all(_bytes(tensors, g[:-1]) < GROUP_BYTES for g in groups[:-1])
    # A model under the group size is one item.
    small = {"a": torch.zeros(10), "b": torch.zeros(3)}
    assert group_keys(small) == [["a", "b"]]


class _Slow(SharedTensorDownloadable):
    """Slow to serialize, so that two receivers asking at once overlap inside produce_item."""

    def produce_item(self, index):
        time.sleep(0.05)
        return super().produce_item(index)


def _receive(downloadable, requester, start, out):
    """NVFlare's download protocol from one receiver's side: produce() until EOF, items fed to its consumer."""
    from nvflare.app_opt.pt.tensor_downloader import TensorConsumer
    from nvflare.fuel.f3.streaming.download_service import ProduceRC

    consumer, state = TensorConsumer(None, {}), {}
    start.wait()
    while True:
        rc, items, state = downloadable.produce(state, requester)
        if rc == ProduceRC.EOF:
            break
        assert rc == ProduceRC.OK
        consumer.consume("ref", state, items)
    out[requester] = consumer.result


def test_each_item_is_produced_once_for_two_receivers_and_round_trips_bit_exact():
    tensors = _tensors()
    ids = {k: f"T{i}" for i, k in enumerate(tensors)}
    d = _Slow({ids[k]: v for k, v in tensors.items()})
    d.num_receivers = 2  # what set_transaction reads from a transaction with num_receivers=2
    start, out = threading.Barrier(2), {}
    threads = [threading.Thread(target=_receive, args=(d, f"site-{i}", start, out)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(out) == ["site-1", "site-2"]
    assert d.produced_items == len(d.groups) >= 3, "an item was serialized more than once"
    assert d.served == {"site-1", "site-2"}
    for site, received in out.items():
        assert set(received) == set(ids.values()), site
        for k, v in tensors.items():
            got = received[ids[k]]
            assert got.dtype == v.dtype and got.shape == v.shape and torch.equal(got, v), (site, k)


def test_the_cache_holds_what_separates_the_fastest_receiver_from_the_slowest():
    """What the shared download costs beyond the model: items one site took and another has not yet."""
    from nvflare.fuel.f3.streaming.download_service import ProduceRC

    def steps(d, requester):  # one produce() call per step, as the receiver's requests arrive
        state = {}
        while True:
            rc, _, state = d.produce(state, requester)
            if rc == ProduceRC.EOF:
                return
            yield

    def run(order):
        d = SharedTensorDownloadable(_tensors())
        d.num_receivers = 2
        walks = {site: steps(d, site) for site in ("site-1", "site-2")}
        for site in order(walks):
            next(walks[site], None)
        return d

    apart = run(lambda w: ["site-1"] * 10 + ["site-2"] * 10)  # one site has it all before the other starts
    assert apart.cache_peak_bytes == apart.produced_bytes
    lockstep = run(lambda w: ["site-1", "site-2"] * 10)
    largest = max(lockstep.get_item_size(i) for i in range(len(lockstep.groups)))
    assert lockstep.produced_bytes == apart.produced_bytes and len(lockstep.groups) >= 3
    assert lockstep.cache_peak_bytes <= 2 * largest + 4096 < lockstep.produced_bytes


def test_tensors_sharing_memory_are_serialized_apart():
    w = torch.randn(4, 4)
    d = SharedTensorDownloadable({"T0": w, "T1": w, "T2": w[1]})  # tied weights and a view: one group
    from safetensors.torch import load

    got = load(d.produce_item(0))
    assert all(torch.equal(got[k], v) for k, v in {"T0": w, "T1": w, "T2": w[1]}.items())


# --- the controller ---------------------------------------------------------------------------------------------

def _open_transactions():
    from nvflare.fuel.f3.streaming.download_service import DownloadService

    return set(DownloadService._tx_table)  # private (nvflare==2.9.0): the live transactions


def test_controller_sends_references_into_one_transaction_and_ends_it_with_the_round(controller):
    from nvflare.app_common.abstract.fl_model import FLModel
    from nvflare.fuel.utils.fobs.decomposers.via_downloader import LazyDownloadRef

    model = FLModel(params={"w": torch.randn(8, 8), "b": torch.zeros(8)}, current_round=0)
    before = _open_transactions()
    controller.send_model(data=model, targets=["site-1", "site-2"], callback=lambda r: True)
    (task,) = controller.sent
    refs = task["params"]
    assert task["timeout"] == 30 and task["targets"] == ["site-1", "site-2"]
    assert all(isinstance(v, LazyDownloadRef) for v in refs.values())
    assert len({v.ref_id for v in refs.values()}) == 1 and {v.item_id for v in refs.values()} == {"T0", "T1"}
    assert all(torch.is_tensor(v) for v in model.params.values())  # the global model itself is untouched
    opened = _open_transactions() - before
    assert len(opened) == 1

    controller._targets, controller._answered = ["site-1", "site-2"], {"site-1", "site-2"}
    controller._end_shared_broadcast()
    assert not (_open_transactions() & opened)
    assert ("round 1: global model served to 0 sites from one shared download (0.0 MB in 1 items; at most 0.0 MB "
            "cached at once)") in controller.logs


@pytest.mark.parametrize("broadcast, params", [("per-site", {"w": torch.zeros(2)}),
                                               ("shared", {"w": torch.zeros(2), "n": 3})])
def test_per_site_or_non_tensor_params_keep_nvflares_broadcast(controller, broadcast, params):
    from nvflare.app_common.abstract.fl_model import FLModel

    controller.broadcast_mode = broadcast
    model = FLModel(params=params)
    before = _open_transactions()
    controller.send_model(data=model, targets=["site-1", "site-2"], callback=lambda r: True)
    assert controller.sent[0]["params"] is params and _open_transactions() == before


def test_a_failing_shared_download_falls_back_to_nvflares_broadcast(controller, monkeypatch):
    from fl_server import shared_broadcast
    from nvflare.app_common.abstract.fl_model import FLModel

    def refuse(*a, **k):
        raise ValueError("no such transaction")

    monkeypatch.setattr(shared_broadcast.ObjectDownloader, "add_object", refuse)
    params = {"w": torch.zeros(2)}
    before = _open_transactions()
    controller.send_model(data=FLModel(params=params), targets=["site-1", "site-2"], callback=lambda r: True)
    assert controller.sent[0]["params"] is params and controller._shared is None
    assert _open_transactions() == before  # the transaction it had opened is gone
    assert any("sending per site" in m for m in controller.logs)


def test_unknown_broadcast_is_refused():
    from fl_server.fedavg import LargeModelFedAvg

    with pytest.raises(ValueError, match="broadcast_mode"):
        LargeModelFedAvg(num_clients=2, broadcast_mode="multicast")
