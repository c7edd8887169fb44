"""The capture engine: one pass, every offered layer encoded in its hook, exact activations on
demand, hooks removed, the model left as it was, no threads."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
import torchvision
from _support import (
    TinyCNN,
    assert_untouched,
    hooks_of,
    one_thread,  # noqa: F401  (an autouse fixture)
    snapshot,
)
from torch import nn

from fmwidget import codes
from fmwidget.capture import (
    ModelError,
    capture,
    exact_activation,
    model_device,
    model_state,
    resolve_layer,
)

# The models the issue names; random weights, small input to keep the suite fast.
EXACT_MODELS = [
    "alexnet", "vgg16", "resnet50", "squeezenet1_0", "mobilenet_v3_small", "efficientnet_b0",
    "densenet121", "convnext_tiny", "regnet_y_400mf",
]


def _reference_outputs(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Independent reference: a deep copy with every inplace flag off, outputs cloned at the
    first call."""
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
    """The capture's values are within half a quantisation step of ``ref``, per channel (plus
    the float32 rounding of decoding)."""
    got = cap.values(layer)
    assert got.shape == ref.shape
    stats = cap.stats(layer)
    lo, hi = stats["min"].astype(np.float64), stats["max"].astype(np.float64)
    half = torch.from_numpy((hi - lo) / 508)[:, None, None]
    scale = torch.from_numpy(np.maximum(np.abs(lo), np.abs(hi)))[:, None, None]
    tol = half * 1.000001 + 4 * float(np.finfo(np.float32).eps) * scale + 1e-30
    ok = torch.isfinite(ref)
    assert bool(((got.double() - ref.double()).abs() <= tol)[ok].all()), layer


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / max(b.norm(), 1e-30))


def _float32_bytes(cap) -> int:
    return sum(4 * int(np.prod(i.out_shape)) for i in cap.layers)


@pytest.mark.parametrize("name", EXACT_MODELS)
def test_every_offered_layer_is_encoded_in_its_hook_for_torchvision_models(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 128, 128)
    before = snapshot(model)
    cap = capture(model, x)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert set(cap.names) <= set(convs) and len(cap.names) >= 0.9 * len(convs)
    ref = _reference_outputs(model, x, cap.names)
    for layer in cap.names:
        # The codes are those of the output as the hook saw it, before any in-place ReLU or
        # `out += identity` after it: bit for bit the encoding of the reference output.
        expected = codes.encode(ref[layer])
        assert torch.equal(cap.maps(layer), expected.codes), layer
        assert cap.codes(layer).vmin.tobytes() == expected.vmin.tobytes(), layer
        _assert_within_half_step(cap, layer, ref[layer])
        np.testing.assert_array_equal(cap.stats(layer)["min"], ref[layer].amin(dim=(1, 2)).numpy())
        np.testing.assert_array_equal(cap.stats(layer)["max"], ref[layer].amax(dim=(1, 2)).numpy())
        assert cap.info(layer).out_shape == tuple(ref[layer].shape)
    # Exact activations at the start, the middle and the end, all pre-ReLU where a ReLU follows.
    for layer in (cap.names[0], cap.names[len(cap.names) // 2], cap.names[-1]):
        act = exact_activation(model, x, layer)
        assert act.dtype == torch.float32 and act.device.type == "cpu"
        assert _rel(act, ref[layer]) <= 1e-6, layer
        _assert_within_half_step(cap, layer, act)
    assert_untouched(model, before)


def test_values_are_within_half_a_step_of_exact_activation_for_every_layer(tiny_model, tiny_input):
    cap = capture(tiny_model, tiny_input, "all")
    for layer in cap.names:
        _assert_within_half_step(cap, layer, exact_activation(tiny_model, tiny_input, layer))
    assert cap.values("grouped", [3, 1]).shape == (2, 32, 32)
    assert torch.equal(cap.values("grouped", [3, 1]), cap.values("grouped")[[3, 1]])


def test_a_capture_starts_no_threads():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    before = set(threading.enumerate())
    count = threading.active_count()
    cap = capture(model, x, "all")
    exact_activation(model, x, "layer2.0.conv1")
    assert threading.active_count() == count and set(threading.enumerate()) == before
    assert cap.nbytes > 0


def test_the_capture_keeps_a_quarter_of_float32():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    cap = capture(model, torch.randn(1, 3, 224, 224))
    float32 = _float32_bytes(cap)
    assert cap.nbytes <= 0.26 * float32
    # uint8 codes plus two float32 ranges per channel, nothing else
    assert cap.nbytes == sum(int(np.prod(i.out_shape)) + 8 * i.out_shape[0] for i in cap.layers)


def test_conv_before_inplace_relu_is_not_rectified():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    cap = capture(model, x, ["conv1", "relu"])
    assert cap.stats("conv1")["min"].min() < 0, "conv1 came back rectified"
    assert cap.values("conv1").min() < 0
    act = exact_activation(model, x, "conv1")
    assert act.min() < 0
    ref = nn.functional.conv2d(x, model.conv1.weight, stride=2, padding=3)[0]
    assert _rel(act, ref) <= 1e-6


def test_one_forward_pass_captures_all_layers(tiny_model, tiny_input):
    calls = []
    handle = tiny_model.register_forward_pre_hook(lambda *a: calls.append(1))
    cap = capture(tiny_model, tiny_input, "all")
    handle.remove()
    assert len(calls) == 1
    assert cap.names == ["conv1", "relu", "dw", "grouped", "pool"]


def test_default_layers_are_convs_in_execution_order(tiny_model, tiny_input):
    cap = capture(tiny_model, tiny_input)
    assert cap.names == ["conv1", "dw", "grouped"]
    info = {i.name: i for i in cap.layers}
    assert info["dw"].depthwise and not info["grouped"].depthwise
    assert info["grouped"].weight_shape == (16, 4, 3, 3)
    assert info["conv1"].out_shape == (8, 32, 32)
    assert info["conv1"].to_json() == {
        "name": "conv1", "type": "Conv2d", "out_shape": [8, 32, 32], "weight_shape": [8, 3, 3, 3],
        "calls": 1, "depthwise": False,
    }


def test_reused_module_is_captured_at_first_call(tiny_model, tiny_input):
    cap = capture(tiny_model, tiny_input, "all")
    relu = cap.info("relu")
    assert relu.calls == 3
    first = torch.relu(tiny_model.conv1(tiny_input))[0].detach()
    assert _rel(exact_activation(tiny_model, tiny_input, "relu"), first) == 0
    _assert_within_half_step(cap, "relu", first)
    assert torch.equal(cap.maps("relu"), codes.encode(first).codes)


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
    with pytest.raises(TypeError, match="layers must be"):
        capture(tiny_model, tiny_input, [])
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        capture("resnet18", tiny_input)

    class Skips(TinyCNN):
        def forward(self, x):  # never calls self.dw
            return self.fc(self.pool(self.relu(self.conv1(x))).flatten(1)[:, :8].repeat(1, 2))

    with pytest.raises(ValueError, match="'dw' did not run"):
        capture(Skips(), tiny_input, ["conv1", "dw"])
    assert hooks_of(tiny_model) == 0


def test_resolve_layer():
    names = ["conv1", "layer1.0.conv1", "fc"]
    assert resolve_layer(names, "fc") == "fc"
    with pytest.raises(ValueError, match=r"layer='conv' is not one of .*Did you mean 'conv1'"):
        resolve_layer(names, "conv")
    with pytest.raises(ValueError, match="name='zzz'"):
        resolve_layer(names, "zzz", argname="name")
    with pytest.raises(TypeError, match="layer must be a layer name \\(str\\), got int 3"):
        resolve_layer(names, 3)


def test_model_without_conv_gets_a_clear_error(tiny_input):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
    with pytest.raises(ValueError, match="no nn.Conv2d.*layers='all'"):
        capture(model, tiny_input)
    with pytest.raises(ValueError, match="no feature maps"):
        capture(model, tiny_input, "all")
    assert hooks_of(model) == 0


def test_hooks_removed_and_mode_restored_when_forward_raises(tiny_model, tiny_input):
    class Boom(nn.Module):
        def forward(self, x):
            raise ZeroDivisionError("boom")

    tiny_model.pool = Boom()
    tiny_model.train()
    tiny_model.dw.eval()  # mixed modes come back mixed
    tiny_model.conv1.weight.requires_grad_(False)
    before = snapshot(tiny_model)
    with pytest.raises(ModelError, match="forward pass raised ZeroDivisionError") as info:
        capture(tiny_model, tiny_input)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert_untouched(tiny_model, before)
    with pytest.raises(RuntimeError):
        exact_activation(tiny_model, tiny_input, "pool")
    assert_untouched(tiny_model, before)


def test_model_state_restores_modes_flags_and_hooks_whatever_happens(tiny_model):
    tiny_model.train()
    tiny_model.dw.eval()
    tiny_model.fc.weight.requires_grad_(False)
    before = snapshot(tiny_model)
    with pytest.raises(KeyError), model_state(tiny_model, eval_mode=True) as handles:
        assert not any(m.training for m in tiny_model.modules())
        handles.append(tiny_model.conv1.register_forward_hook(lambda *a: None))
        for p in tiny_model.parameters():
            p.requires_grad_(not p.requires_grad)
        tiny_model.grouped.train()
        raise KeyError("inside")
    assert_untouched(tiny_model, before)
    with model_state(tiny_model) as handles:  # without eval_mode the modes are left alone inside
        assert tiny_model.training and not tiny_model.dw.training
    assert_untouched(tiny_model, before)


def test_training_mode_model_runs_in_eval_and_comes_back_training(tiny_input):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Conv2d(4, 4, 1)).train()
    before = snapshot(model)
    a = capture(model, tiny_input).maps("3")
    b = capture(model, tiny_input).maps("3")
    assert torch.equal(a, b)  # eval mode: dropout off, BN running stats unchanged
    assert_untouched(model, before)
    assert model.training


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_models_in_other_precisions(tiny_input, dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True)).to(dtype)
    try:
        model(tiny_input.to(dtype))
    except RuntimeError:  # pragma: no cover - a CPU build without that dtype's convolution
        pytest.skip(f"no {dtype} convolution on this CPU")
    before = snapshot(model)
    cap = capture(model, tiny_input)  # a float32 input is given in the model's dtype
    assert cap.stats("0")["min"].min() < 0, "copied before the in-place ReLU"
    with torch.no_grad():
        ref = model[0](tiny_input.to(dtype))[0].float()
    _assert_within_half_step(cap, "0", ref)
    act = exact_activation(model, tiny_input, "0")
    assert act.dtype == torch.float32 and torch.equal(act, ref)
    assert_untouched(model, before)


def test_huge_values_nan_and_inf_are_stored_safely(tiny_input):
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 1] = 1e30  # huge, finite
        conv.weight[1, 0] = 1.0  # NaN and +Inf pass through
        conv.weight[2, 2] = -1e38  # overflows to -inf for inputs above 3.4
    x = tiny_input.clone()
    x[0, 0, 0, 0] = float("nan")
    x[0, 0, 0, 1] = float("inf")
    x[0, 2] = x[0, 2].abs() + 0.01  # channel 2's finite values stay within float32's range
    x[0, 2, 5, 5] = 20.0
    cap = capture(nn.Sequential(conv), x)
    stats = cap.stats("0")
    assert not stats["finite"]
    assert np.isfinite(stats["min"]).all() and np.isfinite(stats["max"]).all()
    with torch.no_grad():
        ref = conv(x)[0]
    assert torch.isneginf(ref[2]).any() and torch.isnan(ref[1]).any() and torch.isposinf(ref[1]).any()
    assert ref[0][torch.isfinite(ref[0])].abs().max() > 1e29
    got = cap.values("0")
    assert torch.equal(torch.isnan(got), torch.isnan(ref))
    codes_ = cap.maps("0")
    assert torch.equal(codes_ == 255, torch.isnan(ref))
    # +-Inf sit at the channel's ends, codes 254 and 0: its exact finite max and min
    for c in range(3):
        pos, neg = torch.isposinf(ref[c]), torch.isneginf(ref[c])
        assert (codes_[c][pos] == 254).all() and (codes_[c][neg] == 0).all()
        assert torch.allclose(got[c][pos], torch.tensor(float(stats["max"][c])), rtol=1e-6, atol=0)
        assert torch.allclose(got[c][neg], torch.tensor(float(stats["min"][c])), rtol=1e-6, atol=0)
    _assert_within_half_step(cap, "0", ref)


def test_device_logic_on_meta_and_cpu(tiny_model, tiny_input):
    with pytest.raises(ValueError, match="never moves your model"):
        capture(tiny_model, tiny_input, device="cuda:0")
    with pytest.raises(ValueError, match="not a torch device"):
        capture(tiny_model, tiny_input, device="gpu please")
    with pytest.raises(ValueError, match="device='meta'"):
        capture(tiny_model, tiny_input, device="meta")
    cap = capture(tiny_model, tiny_input, device="cpu")
    assert cap.maps("conv1").device.type == "cpu"
    meta = copy.deepcopy(tiny_model).to("meta")
    with pytest.raises(ValueError, match="'meta' device.*to_empty"):
        capture(meta, tiny_input)
    with pytest.raises(ValueError, match="'meta' device"):
        exact_activation(meta, tiny_input, "conv1")
    assert hooks_of(meta) == 0 and hooks_of(tiny_model) == 0
    assert model_device(nn.ReLU()) == torch.device("cpu")


def test_exact_activation_errors(tiny_model, tiny_input):
    with pytest.raises(ValueError, match="layer='nope'.*offered layers"):
        exact_activation(tiny_model, tiny_input, "nope")
    with pytest.raises(ValueError, match="layer=''"):
        exact_activation(tiny_model, tiny_input, "")
    assert hooks_of(tiny_model) == 0


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_tuple_and_dict_outputs_are_kept(tiny_model, tiny_input, kind):
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_model

        def forward(self, x):
            y = self.net(x)
            return (y, y * 2) if kind == "tuple" else {"out": y}

    cap = capture(Wrapped(), tiny_input)
    assert cap.names == ["net.conv1", "net.dw", "net.grouped"]
    with torch.no_grad():
        ref = tiny_model(tiny_input)
    out = cap.output[0] if kind == "tuple" else cap.output["out"]
    assert torch.equal(out, ref)


def test_clear_frees_everything(tiny_model, tiny_input):
    cap = capture(tiny_model, tiny_input)
    assert cap.nbytes > 0 and cap.output is not None
    cap.clear()
    assert cap.nbytes == 0 and cap.output is None
    with pytest.raises(KeyError):
        cap.maps("conv1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_model_activations_come_back_to_cpu(tiny_model, tiny_input):  # pragma: no cover
    model = tiny_model.cuda()
    cap = capture(model, tiny_input)
    assert cap.maps("conv1").device.type == "cpu"
    act = exact_activation(model, tiny_input, "conv1")
    ref = model.conv1(tiny_input.cuda())[0].detach().cpu()
    assert _rel(act, ref) <= 1e-6
    assert torch.isfinite(cap.values("conv1")).all() and cap.stats("conv1")["min"].dtype == np.float32
    assert next(model.parameters()).is_cuda


def test_large_input_is_compact():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 1024, 1024)
    cap = capture(model, x)
    assert cap.nbytes <= 0.26 * _float32_bytes(cap)
    ref = exact_activation(model, x, "conv1")  # 64 x 512 x 512: the sliced encoder
    _assert_within_half_step(cap, "conv1", ref)


@pytest.mark.slow
def test_large_2048_input_fits():
    model = torchvision.models.resnet50(weights=None).eval()
    x = torch.randn(1, 3, 2048, 2048)
    cap = capture(model, x)
    assert cap.nbytes <= 0.26 * _float32_bytes(cap)
    _assert_within_half_step(cap, "conv1", exact_activation(model, x, "conv1"))
