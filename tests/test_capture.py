"""The capture engine: exact activations, one pass, hooks removed, the model left as it was."""

from __future__ import annotations

import copy
import gc
import threading
import time
import weakref

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from _support import assert_untouched, hooks_of, snapshot
from fmwidget import capture as cap_mod
from fmwidget.capture import capture, exact_activation

# The models the issue names; random weights, small input to keep the suite fast.
EXACT_MODELS = [
    "alexnet", "vgg16", "resnet50", "squeezenet1_0", "mobilenet_v3_small", "efficientnet_b0",
    "densenet121", "convnext_tiny", "regnet_y_400mf",
]


def _reference_outputs(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Independent reference: a deep copy with every inplace flag off, outputs cloned."""
    ref = copy.deepcopy(model).eval()
    for m in ref.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    mods = dict(ref.named_modules())
    out: dict[str, torch.Tensor] = {}

    def make(name):
        def hook(_m, _i, o):
            out.setdefault(name, o[0].detach().clone())
        return hook

    handles = [mods[n].register_forward_hook(make(n)) for n in names]
    with torch.no_grad():
        ref(x)
    for h in handles:
        h.remove()
    return out


def _assert_within_half_step(cap, layer: str, ref: torch.Tensor) -> None:
    """Decoded compact values are within half a quantisation step of ``ref``, per channel."""
    got = cap.values(layer)
    assert got.shape == ref.shape
    stats = cap.stats(layer)
    half_step = torch.from_numpy((stats["max"] - stats["min"]) / 508.0)[:, None, None]
    tol = half_step * 1.001 + 1e-6 * ref.abs() + 1e-30
    ok = torch.isfinite(ref)
    assert bool(((got - ref).abs() <= tol)[ok].all()), layer


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / max(b.norm(), 1e-30))


@pytest.mark.parametrize("name", EXACT_MODELS)
def test_activations_exact_for_torchvision_models(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 128, 128)
    before = snapshot(model)
    cap = capture(model, x)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert set(cap.names) <= set(convs) and len(cap.names) >= 0.9 * len(convs)
    ref = _reference_outputs(model, x, cap.names)
    # Compact copies (uint8 per channel) are within half a step of the truth for every layer,
    # with exact float32 ranges.
    for layer in cap.names:
        _assert_within_half_step(cap, layer, ref[layer])
        np.testing.assert_array_equal(cap.stats(layer)["min"], ref[layer].amin(dim=(1, 2)).numpy())
        np.testing.assert_array_equal(cap.stats(layer)["max"], ref[layer].amax(dim=(1, 2)).numpy())
    # Exact activations at the start, the middle and the end, all pre-ReLU where a ReLU follows.
    for layer in (cap.names[0], cap.names[len(cap.names) // 2], cap.names[-1]):
        act = exact_activation(model, x, layer)
        assert act.dtype == torch.float32 and act.device.type == "cpu"
        assert _rel(act, ref[layer]) <= 1e-6, layer
    assert_untouched(model, before)


def test_conv_before_inplace_relu_is_not_rectified():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    cap = capture(model, x, ["conv1", "relu"])
    assert cap.stats("conv1")["min"].min() < 0, "conv1 came back rectified"
    act = exact_activation(model, x, "conv1")
    assert act.min() < 0
    ref = nn.functional.conv2d(x, model.conv1.weight, stride=2, padding=3)[0]
    assert _rel(act, ref) <= 1e-6


def test_one_forward_pass_captures_all_layers(tiny_model, tiny_input):
    calls = []
    tiny_model.register_forward_pre_hook(lambda *a: calls.append(1))
    cap = capture(tiny_model, tiny_input, "all")
    assert len(calls) == 1
    assert cap.names == ["conv1", "relu", "dw", "grouped", "pool"]


def test_default_layers_are_convs_in_execution_order(tiny_model, tiny_input):
    cap = capture(tiny_model, tiny_input)
    assert cap.names == ["conv1", "dw", "grouped"]
    info = {i.name: i for i in cap.layers}
    assert info["dw"].depthwise and not info["grouped"].depthwise
    assert info["grouped"].weight_shape == (16, 4, 3, 3)
    assert info["conv1"].out_shape == (8, 32, 32)


def test_reused_module_is_captured_at_first_call(tiny_model, tiny_input):
    cap = capture(tiny_model, tiny_input, "all")
    relu = cap.info("relu")
    assert relu.calls == 3
    first = torch.relu(tiny_model.conv1(tiny_input))[0]
    assert _rel(exact_activation(tiny_model, tiny_input, "relu"), first) == 0
    _assert_within_half_step(cap, "relu", first.detach())


def test_explicit_layers_and_errors(tiny_model, tiny_input):
    cap = capture(tiny_model, tiny_input, ["grouped", "conv1"])
    assert cap.names == ["conv1", "grouped"]  # execution order, not the list's
    with pytest.raises(ValueError, match="Did you mean 'conv1'"):
        capture(tiny_model, tiny_input, ["conv"])
    with pytest.raises(ValueError, match="not a .*feature map"):
        capture(tiny_model, tiny_input, ["fc"])
    with pytest.raises(ValueError, match="layers='nope'"):
        capture(tiny_model, tiny_input, "nope")
    with pytest.raises(TypeError, match="layers must be"):
        capture(tiny_model, tiny_input, 3)
    assert hooks_of(tiny_model) == 0


def test_model_without_conv_gets_a_clear_error(tiny_input):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        capture(model, tiny_input)


def test_hooks_removed_and_mode_restored_when_forward_raises(tiny_model, tiny_input):
    class Boom(nn.Module):
        def forward(self, x):
            raise ZeroDivisionError("boom")

    tiny_model.pool = Boom()
    tiny_model.train()
    tiny_model.dw.eval()  # mixed modes come back mixed
    tiny_model.conv1.weight.requires_grad_(False)
    before = snapshot(tiny_model)
    with pytest.raises(RuntimeError, match="forward pass raised ZeroDivisionError"):
        capture(tiny_model, tiny_input)
    assert_untouched(tiny_model, before)
    with pytest.raises(RuntimeError):
        exact_activation(tiny_model, tiny_input, "pool")
    assert_untouched(tiny_model, before)


def test_training_mode_model_runs_in_eval_and_comes_back_training(tiny_model, tiny_input):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Conv2d(4, 4, 1)).train()
    before = snapshot(model)
    a = capture(model, tiny_input).maps("3")
    b = capture(model, tiny_input).maps("3")
    assert torch.equal(a, b)  # eval mode: dropout off, BN running stats unchanged
    assert_untouched(model, before)


def test_float16_model_output_is_copied_before_inplace_relu(tiny_input):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True)).half()
    if not torch.ones(1, dtype=torch.float16).add(1).item():  # pragma: no cover
        pytest.skip("no float16 arithmetic")
    try:
        model(tiny_input.half())
    except RuntimeError:
        pytest.skip("float16 conv not supported on this CPU build")
    cap = capture(model, tiny_input.half())
    assert cap.stats("0")["min"].min() < 0


def test_huge_values_nan_and_inf_are_stored_safely(tiny_input):
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1e6
    x = tiny_input.clone()
    x[0, 0, 0, 0] = float("nan")
    x[0, 0, 0, 1] = float("inf")
    cap = capture(nn.Sequential(conv), x)
    stats = cap.stats("0")
    assert not stats["finite"] and stats["nan_code"] == 255
    assert np.isfinite(stats["min"]).all() and np.isfinite(stats["max"]).all()
    with torch.no_grad():
        ref = conv(x)[0]
    got = cap.values("0")
    assert torch.equal(torch.isnan(got), torch.isnan(ref))
    # +-Inf clip to the channel's ends (its exact finite max and min)
    for c in range(3):
        pos, neg = torch.isposinf(ref[c]), torch.isneginf(ref[c])
        assert torch.allclose(got[c][pos], torch.tensor(float(stats["max"][c])), rtol=1e-6, atol=0)
        assert torch.allclose(got[c][neg], torch.tensor(float(stats["min"][c])), rtol=1e-6, atol=0)
    _assert_within_half_step(cap, "0", ref)


def test_device_logic_on_meta_and_cpu(tiny_model, tiny_input):
    with pytest.raises(ValueError, match="never moves your model"):
        capture(tiny_model, tiny_input, device="cuda:0")
    with pytest.raises(ValueError, match="not a torch device"):
        capture(tiny_model, tiny_input, device="gpu please")
    cap = capture(tiny_model, tiny_input, device="cpu")
    assert cap.maps("conv1").device.type == "cpu"
    meta = copy.deepcopy(tiny_model).to("meta")
    with pytest.raises(ValueError, match="'meta' device"):
        capture(meta, tiny_input)
    assert cap_mod.model_device(nn.ReLU()) == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_model_activations_come_back_to_cpu(tiny_model, tiny_input):  # pragma: no cover
    model = tiny_model.cuda()
    cap = capture(model, tiny_input)
    assert cap.maps("conv1").device.type == "cpu"
    act = exact_activation(model, tiny_input, "conv1")
    ref = model.conv1(tiny_input.cuda())[0].cpu()
    assert _rel(act, ref) <= 1e-6
    assert next(model.parameters()).is_cuda


def test_large_input_is_compact():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 1024, 1024)
    cap = capture(model, x)
    float32_bytes = sum(4 * np.prod(i.out_shape) for i in cap.layers)
    assert cap.nbytes <= 0.3 * float32_bytes


@pytest.mark.slow
def test_large_2048_input_fits():
    model = torchvision.models.resnet50(weights=None).eval()
    cap = capture(model, torch.randn(1, 3, 2048, 2048))
    float32_bytes = sum(4 * np.prod(i.out_shape) for i in cap.layers)
    assert cap.nbytes <= 0.3 * float32_bytes


# --------------------------------------------------------------------------- background compaction
# On the CPU the hooks only copy each output; one worker thread per capture compacts the copies
# (capture._Compactor). These tests pin down that the result is exactly the synchronous one and
# that errors, memory limits, clear() and failures leave nothing behind.


def _same_stored(a, b) -> bool:
    """Bit-identical compact storage (codes, ranges including the sign of zero, flag)."""
    return (
        torch.equal(a.codes, b.codes)
        and a.vmin.tobytes() == b.vmin.tobytes()
        and a.vmax.tobytes() == b.vmax.tobytes()
        and a.finite == b.finite
    )


def _sync_reference(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict:
    """What the synchronous path (``_compact`` in the hook, on an untouched copy) stores."""
    return {name: cap_mod._compact(out[None]) for name, out in _reference_outputs(model, x, names).items()}


def _compact_thread(cap):
    """The capture's job in the shared compaction threads (a Future), or None."""
    return cap._compactor._worker if cap._compactor is not None else None


def _gone(worker, seconds: float = 10.0) -> bool:
    """The capture's background work has ended (the shared thread itself stays for the next)."""
    if worker is not None:
        try:
            worker.result(timeout=seconds)
        except Exception:  # noqa: BLE001 - only whether it ended matters here
            pass
    return worker is None or worker.done()


@pytest.mark.parametrize(
    "name, layers",
    [("alexnet", None), ("resnet18", "all"), ("mobilenet_v3_small", None), ("efficientnet_b0", None)],
)
def test_background_compaction_is_bit_identical_to_the_synchronous_path(name, layers):
    # AlexNet: conv outputs rectified in place right after the hook; ResNet-18 with 'all': batch
    # norm outputs changed by ReLU(inplace=True) and by `out += identity`.
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    cap = capture(model, x, layers)
    ref = _sync_reference(model, x, cap.names)
    cap.wait()
    assert all(cap.ready(n) for n in cap.names)
    for layer in cap.names:
        assert _same_stored(cap._get(layer), ref[layer]), layer
    assert _gone(_compact_thread(cap))


def _adversarial(big: bool) -> torch.Tensor:
    """Channels that stress the quantiser: NaN, +-Inf, constant, all non-finite, 1e-8..1e8 scales,
    signed zeros, ranges that overflow float32 and ranges of a few ulps."""
    g = torch.Generator().manual_seed(0)
    C, H, W = (80, 128, 128) if big else (24, 9, 7)  # big: more than _WHOLE values, in slices
    a = torch.randn(C, H, W, generator=g)
    a *= torch.logspace(-8, 8, C)[:, None, None]
    a[1] = 3.25  # constant
    a[2, 0, 0], a[2, 1, 1] = float("nan"), float("inf")
    a[3, 0, :3] = torch.tensor([-float("inf"), float("inf"), float("nan")])
    a[4] = float("nan")  # no finite value at all
    a[5] = 0.0
    a[5, 0, 0] = -0.0
    a[6, 0, 0], a[6, 0, 1] = -3e38, 3e38  # hi - lo overflows to inf
    a[7] = 1.0
    a[7, 0, 0] = 1.0 + 2**-23  # a one-ulp range
    a[8] = 1e-38
    a[8, 0, 0] = 1.0000001e-38  # a subnormal-sized range: gain overflows
    if big:
        a[60:] = a[60:].abs()  # a whole slice of finite channels next to slices with NaN
    return a


@pytest.mark.parametrize("big", [False, True])
def test_compact_owned_matches_compact_bit_for_bit(big):
    a = _adversarial(big)
    finite = a.clone()
    finite[~torch.isfinite(finite)] = 0.5
    for data in (a, finite):
        with np.errstate(all="ignore"):  # _compact warns about the NaN it maps to code 255
            expected = cap_mod._compact(data[None].clone())
        assert _same_stored(cap_mod._compact_owned(data.clone()), expected)


def _reference_codes(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Independent float32 reference of the quantiser (see ``capture._quantize``)."""
    ok = torch.isfinite(a)
    lo = torch.where(ok, a, torch.inf).amin(dim=(1, 2))
    hi = torch.where(ok, a, -torch.inf).amax(dim=(1, 2))
    rng = hi - lo
    good = torch.isfinite(rng) & (rng > 0)
    gain = torch.where(good, torch.tensor(254.0) / torch.where(good, rng, torch.ones(())), torch.zeros(()))
    base = torch.where(torch.isfinite(lo), -lo * gain, torch.zeros(())) + 0.5
    v = a * gain[:, None, None]  # two roundings, as numpy's multiply then add
    v = v + base[:, None, None]
    codes = torch.where(torch.isfinite(v), v, torch.zeros(())).trunc().to(torch.uint8)
    codes[torch.isposinf(a)] = 254
    codes[torch.isneginf(a)] = 0
    codes[torch.isnan(a)] = 255
    return codes, lo, hi


@pytest.mark.parametrize("big", [False, True])
def test_compact_owned_matches_an_independent_reference(big):
    a = _adversarial(big)
    a[8] = 1.0  # no subnormal-sized range: its codes come from casting inf/NaN, platform-defined
    got = cap_mod._compact_owned(a.clone())
    codes, lo, hi = _reference_codes(a)
    assert torch.equal(got.codes, codes)
    ok = torch.isfinite(lo)
    np.testing.assert_array_equal(got.vmin[ok.numpy()], lo[ok].numpy())
    np.testing.assert_array_equal(got.vmax[ok.numpy()], hi[ok].numpy())
    assert not got.finite


def test_worker_error_names_the_layer_and_spares_the_others(tiny_model, tiny_input, monkeypatch):
    real = cap_mod._compact_owned

    def flaky(a):
        if a.shape[0] == 16:  # 'grouped', the only 16-channel output
            raise MemoryError("no room for the codes")
        return real(a)

    monkeypatch.setattr(cap_mod, "_compact_owned", flaky)
    cap = capture(tiny_model, tiny_input)
    message = r"layer 'grouped'.*MemoryError: no room.*ran out of memory"
    with pytest.raises(RuntimeError, match=message) as info:
        cap.maps("grouped")
    assert isinstance(info.value.__cause__, MemoryError)
    with pytest.raises(RuntimeError, match="layer 'grouped'"):
        cap.wait()
    with pytest.raises(RuntimeError, match="layer 'grouped'"):
        cap.stats("grouped")
    assert cap.ready("grouped")
    ref = _sync_reference(tiny_model, tiny_input, ["conv1", "dw"])
    assert _same_stored(cap._get("conv1"), ref["conv1"]) and _same_stored(cap._get("dw"), ref["dw"])
    assert _gone(_compact_thread(cap))


@pytest.mark.parametrize("chunk", [4 << 20, 4096])
def test_back_pressure_bounds_the_copies_and_keeps_results_exact(monkeypatch, chunk):
    # A limit far below one output: every copy waits until the previous one is compacted.
    # chunk=4096: most copies are too big for a chunk and take the large-buffer path.
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    expected = capture(model, x, "all")
    expected.wait()
    limit = 64 << 10
    monkeypatch.setattr(cap_mod, "_PENDING_LIMIT", limit)
    monkeypatch.setattr(cap_mod, "_CHUNK_BYTES", chunk)
    monkeypatch.setattr(cap_mod, "_CHUNK_VALUES", chunk // 4)
    peak = [0]
    real_buffer = cap_mod._Compactor._buffer

    def buffer(self, n):
        out = real_buffer(self, n)
        peak[0] = max(peak[0], self._held)
        return out

    monkeypatch.setattr(cap_mod._Compactor, "_buffer", buffer)
    cap = capture(model, x, "all")
    cap.wait()
    assert cap.names == expected.names
    for layer in cap.names:
        assert _same_stored(cap._get(layer), expected._get(layer)), layer
    largest = max(4 * int(np.prod(i.out_shape)) for i in cap.layers)
    assert 0 < peak[0] <= max(limit, largest, chunk)
    assert _gone(_compact_thread(cap))


def test_the_capture_job_ends_after_wait(tiny_model, tiny_input):
    cap = capture(tiny_model, tiny_input, "all")
    thread = _compact_thread(cap)
    assert thread is not None
    cap.wait()
    assert _gone(thread)
    assert cap.nbytes > 0


def test_failed_forward_cancels_the_work_and_leaves_no_thread_or_hook(tiny_model, tiny_input, monkeypatch):
    made = []

    class Recorded(cap_mod._Compactor):
        def __init__(self):
            super().__init__()
            made.append(self)

    class Boom(nn.Module):
        def forward(self, x):
            raise ZeroDivisionError("boom")

    monkeypatch.setattr(cap_mod, "_Compactor", Recorded)
    monkeypatch.setattr(cap_mod, "_WAKE_BYTES", 1 << 40)  # the copies stay queued until the end
    tiny_model.pool = Boom()  # after the three convs: their copies are queued when it raises
    before = snapshot(tiny_model)
    with pytest.raises(RuntimeError, match="forward pass raised ZeroDivisionError"):
        capture(tiny_model, tiny_input)
    assert_untouched(tiny_model, before)
    (compactor,) = made
    assert compactor._closed and not compactor._jobs and compactor._outstanding == 0
    assert _gone(compactor._worker)


def test_clear_and_garbage_collection_cancel_pending_work(tiny_model, tiny_input, monkeypatch):
    monkeypatch.setattr(cap_mod, "_WAKE_BYTES", 1 << 40)
    cap = capture(tiny_model, tiny_input)
    thread = _compact_thread(cap)
    cap.clear()
    assert cap.nbytes == 0 and cap.output is None
    with pytest.raises(KeyError):
        cap.maps("conv1")
    assert _gone(thread)
    # A capture dropped unread keeps neither itself nor the model alive, and its thread ends.
    model = copy.deepcopy(tiny_model)
    model_ref = weakref.ref(model)
    cap = capture(model, tiny_input)
    cap_ref, thread = weakref.ref(cap), _compact_thread(cap)
    del cap, model
    gc.collect()
    assert cap_ref() is None and model_ref() is None
    assert _gone(thread)


def test_readers_in_two_threads_get_the_same_result(tiny_model, tiny_input):
    cap = capture(tiny_model, tiny_input, "all")
    got: dict = {}

    def read(tag):
        got[tag] = [cap.maps(n) for n in reversed(cap.names)]

    threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(a is b for a, b in zip(got[0], got[1]))
    ref = _sync_reference(tiny_model, tiny_input, cap.names)
    for layer in cap.names:
        assert _same_stored(cap._get(layer), ref[layer]), layer


def test_a_capture_of_finished_layers_needs_no_worker(tiny_model, tiny_input):
    # What capture() builds for outputs on another device (CUDA): _compact in the hook, no thread.
    ref = _sync_reference(tiny_model, tiny_input, ["conv1", "dw"])
    infos = [cap_mod.LayerInfo(n, "Conv2d", tuple(ref[n].codes.shape), None) for n in ref]
    cap = cap_mod.Capture(layers=infos, _store=dict(ref))
    assert cap.ready("dw") and cap.maps("dw") is ref["dw"].codes
    cap.wait()
    assert cap.nbytes == sum(s.codes.numel() + 8 * s.codes.shape[0] for s in ref.values())
    cap.clear()
    assert cap.nbytes == 0


def test_deferred_compaction_waits_for_resume_and_readers_do_not(tiny_model, tiny_input):
    cap = capture(tiny_model, tiny_input, "all", defer=True)
    names = cap.names
    time.sleep(0.2)
    assert not any(cap.ready(n) for n in names), "compacted before resume()"
    first = cap.maps(names[0])  # a reader compacts what it needs itself
    assert cap.ready(names[0]) and first.dtype == torch.uint8
    cap.resume()
    assert _gone(_compact_thread(cap))
    assert all(cap.ready(n) for n in names)
    ref = _sync_reference(tiny_model, tiny_input, names)
    for layer in names:
        assert _same_stored(cap._get(layer), ref[layer]), layer


# ---------------------------------------------------------------- warm chunks kept between captures


def test_warm_chunks_are_kept_between_captures_within_the_bound_and_released():
    cap_mod.release_reserve()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)  # ~11 MB of conv outputs: three chunks or more
    capture(model, x).wait()
    kept = len(cap_mod._reserve)
    assert 0 < kept <= cap_mod._RESERVE_CHUNKS
    for _ in range(3):
        capture(model, x).wait()
        assert len(cap_mod._reserve) <= cap_mod._RESERVE_CHUNKS
    held = len(cap_mod._reserve)
    assert cap_mod.release_reserve() == held * cap_mod._CHUNK_BYTES
    assert cap_mod._reserve == [] and cap_mod.release_reserve() == 0


def test_reserve_bound_is_respected(monkeypatch):
    cap_mod.release_reserve()
    monkeypatch.setattr(cap_mod, "_RESERVE_CHUNKS", 1)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    capture(model, torch.randn(1, 3, 224, 224)).wait()
    assert len(cap_mod._reserve) == 1
    cap_mod.release_reserve()


def test_reused_chunks_leave_no_trace_of_earlier_values():
    # Chunks from the reserve hold whatever the last capture left there: poison them and check
    # that the next capture is still bit-identical to the synchronous path.
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 160, 160)
    capture(model, x, "all").wait()
    assert cap_mod._reserve
    for data in cap_mod._reserve:
        data.fill_(float("nan"))
    cap_mod._reserve.append(torch.full((1000,), float("inf")))  # a chunk of another size: skipped
    cap = capture(model, x, "all")
    ref = _sync_reference(model, x, cap.names)
    cap.wait()
    for layer in cap.names:
        assert _same_stored(cap._get(layer), ref[layer]), layer
    assert all(d.numel() == cap_mod._CHUNK_VALUES for d in cap_mod._reserve)


# ---------------------------------------------------------------- work beside the forward pass


def test_early_work_gets_its_layer_compacted_during_the_forward_pass(tiny_model, tiny_input):
    threads = []

    def first_codes(one):
        threads.append(threading.current_thread())
        assert len(one.layers) == 1 and one.layers[0].calls == 1
        return one.names[0], one.maps(one.names[0]).clone(), one.stats(one.names[0])["max"].copy()

    for _ in range(10):  # small layers are compacted before the hook returns: still not in it
        early = cap_mod.Early(first_codes)
        cap = capture(tiny_model, tiny_input, "all", defer=True, early=early)
        name, codes, vmax = early.result.result(timeout=30)
        assert name == cap.names[0]
        assert threads[-1] is not threading.main_thread()  # beside the forward pass, not in it
        if _ < 9:
            cap.clear()
    time.sleep(0.2)
    assert not any(cap.ready(n) for n in cap.names[1:]), "the early layer started the drain"
    assert torch.equal(codes, cap.maps(name)) and np.array_equal(vmax, cap.stats(name)["max"])
    ref = _sync_reference(tiny_model, tiny_input, [name])
    assert _same_stored(cap._get(name), ref[name])
    cap.resume()
    cap.wait()


def test_early_work_on_a_named_layer(tiny_model, tiny_input):
    early = cap_mod.Early(lambda one: (one.names, one.layers[0].type, one.layers[0].depthwise), layer="dw")
    cap = capture(tiny_model, tiny_input, early=early)
    assert early.result.result(timeout=30) == (["dw"], "Conv2d", True)
    assert cap.names == ["conv1", "dw", "grouped"]


@pytest.mark.parametrize("layer", ["fc", "pool", "no_such_layer"])
def test_early_work_is_cancelled_when_its_layer_gives_no_map(tiny_model, tiny_input, layer):
    # fc: 2-D output; pool: not offered by default; the last: no such module.
    early = cap_mod.Early(lambda one: one.names, layer=layer)
    cap = capture(tiny_model, tiny_input, early=early)
    assert early.result.cancelled()
    assert cap.names == ["conv1", "dw", "grouped"]


def test_early_work_errors_stay_in_its_result(tiny_model, tiny_input):
    def boom(one):
        raise RuntimeError("early failed")

    early = cap_mod.Early(boom)
    cap = capture(tiny_model, tiny_input, early=early)
    with pytest.raises(RuntimeError, match="early failed"):
        early.result.result(timeout=30)
    cap.wait()  # the capture itself is fine
    assert cap.maps("conv1").dtype == torch.uint8


def test_early_work_is_cancelled_when_the_forward_fails(tiny_model, tiny_input):
    def fail(*_):
        raise RuntimeError("bad forward")

    handle = tiny_model.dw.register_forward_hook(fail)  # before "grouped" runs
    early = cap_mod.Early(lambda one: one.names, layer="grouped")
    with pytest.raises(Exception, match="bad forward"):
        capture(tiny_model, tiny_input, early=early)
    handle.remove()
    assert early.result.cancelled()


def test_early_work_is_cancelled_when_the_forward_fails_with_its_layer_queued(tiny_model, tiny_input):
    gate = threading.Event()
    busy = [cap_mod._workers().submit(gate.wait) for _ in range(4)]  # other captures' work
    try:
        handle = tiny_model.dw.register_forward_hook(lambda *_: 1 / 0)  # conv1 is queued by then
        early = cap_mod.Early(lambda one: one.names)
        with pytest.raises(Exception, match="division by zero"):
            capture(tiny_model, tiny_input, early=early)
        handle.remove()
    finally:
        gate.set()
        for fut in busy:
            fut.result(timeout=30)
    assert early.result.cancelled()
    assert hooks_of(tiny_model) == 0
