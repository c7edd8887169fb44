"""The capture engine: exact activations, one pass, hooks removed, the model left as it was."""

from __future__ import annotations

import copy

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
