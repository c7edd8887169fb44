"""Tests of fmwidget.attribution against references written here from the definitions.

The references never use hooks on the model under test: they run a deep copy
whose nn.ReLU modules are replaced by a guided-ReLU module, and take layer
activations by composing the model's own submodules by hand. Guided
backpropagation is also checked against captum (NeuronGuidedBackprop for one
neuron; GuidedBackprop of a wrapper that outputs the rectified-response
objective for the default), and, for a first convolution, against its closed
form (the transposed convolution of the rectified response with the filter).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fmwidget import attribution as A
from fmwidget.capture import ModelError
from fmwidget.models import SQUEEZENET_WEIGHTS

# The shared ImageNet SqueezeNet weights, as bundled in the package (same file, same sha256).
SQUEEZENET = SQUEEZENET_WEIGHTS


# ----------------------------------------------------------------------------- references


class RefGuidedFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inp):
        ctx.save_for_backward(inp.detach().clone())
        return torch.where(inp > 0, inp, torch.zeros_like(inp))

    @staticmethod
    def backward(ctx, grad_out):
        (inp,) = ctx.saved_tensors
        keep = (grad_out > 0) & (inp > 0)
        return torch.where(keep, grad_out, torch.zeros_like(grad_out))


class RefGuidedReLU(nn.Module):
    def forward(self, inp):
        return RefGuidedFn.apply(inp)


def guided_copy(model: nn.Module) -> nn.Module:
    """Deep copy in eval mode with every nn.ReLU replaced by RefGuidedReLU (the same object for a reused ReLU)."""
    ref = copy.deepcopy(model).eval()
    swaps: dict[int, nn.Module] = {}
    for parent in list(ref.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, child_name, swaps.setdefault(id(child), RefGuidedReLU()))
    return ref


def objective(act, channel, position=None):
    """The scalar guided_backprop differentiates, written from its definition.

    Default: <stop_grad(relu(a_c)), a_c>; with a position (i, j): the neuron a[c, i, j].
    """
    a = act[0, channel]
    if position is not None:
        return a[position]
    return (torch.relu(a).detach() * a).sum()


def ref_guided_backprop(prefix, x, channel, position=None):
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(prefix(xg), channel, position), xg)
    return grad[0]


def ref_grad_cam(prefix, rest, x, target):
    with torch.no_grad():
        act = prefix(x)
    act = act.clone().requires_grad_(True)
    logits = rest(act)
    if target is None:
        target = int(logits[0].argmax())
    (grad,) = torch.autograd.grad(logits[0, target], act)
    weights = grad[0].mean(dim=(1, 2))
    cam = torch.clamp((weights[:, None, None] * act[0].detach()).sum(0), min=0)
    cam = F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    lo, hi = cam.min(), cam.max()
    return ((cam - lo) / (hi - lo) if hi > lo else torch.zeros_like(cam)), target


def rel_err(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


# Per model: layer name -> (x -> activation, activation -> logits or None). Built from the
# model's own submodules, so a layer's activation is computed without hooks.


def seq_parts(m, i):
    def head(a):
        return m.classifier(torch.flatten(m.avgpool(a), 1))

    return m.features[: i + 1], lambda a: head(m.features[i + 1 :](a))


def resnet_parts(m, name):
    stem = [m.conv1, m.bn1, m.relu, m.maxpool]
    stages = [m.layer1, m.layer2, m.layer3, m.layer4]
    def head(a):
        return m.fc(torch.flatten(m.avgpool(a), 1))

    if name == "relu":
        return nn.Sequential(*stem[:3]), lambda a: head(nn.Sequential(m.maxpool, *stages)(a))
    if name.startswith("layer") and "." not in name:
        n = int(name[5:])
        return nn.Sequential(*stem, *stages[:n]), lambda a: head(nn.Sequential(*stages[n:])(a))
    if name == "layer2.0.conv1":
        return (lambda x: m.layer2[0].conv1(nn.Sequential(*stem, m.layer1)(x))), None
    if name == "layer3.1":  # the last block of layer3
        return (lambda x: m.layer3[1](nn.Sequential(*stem, m.layer1, m.layer2, m.layer3[0])(x))), (
            lambda a: head(nn.Sequential(m.layer4)(a))
        )
    raise KeyError(name)


CASES = {
    "alexnet": (lambda: torchvision.models.alexnet(weights=None), 128,
                {"features.0": 0, "features.4": 4, "features.10": 10, "features.11": 11}),
    "vgg11": (lambda: torchvision.models.vgg11(weights=None), 64,
              {"features.1": 1, "features.8": 8, "features.19": 19}),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), 128,
                 {"relu": "relu", "layer1": "layer1", "layer2.0.conv1": "layer2.0.conv1",
                  "layer3.1": "layer3.1", "layer4": "layer4"}),
}


def parts(arch, model, key):
    return resnet_parts(model, key) if arch == "resnet18" else seq_parts(model, key)


@pytest.fixture(scope="module", params=list(CASES))
def zoo(request):
    arch = request.param
    factory, size, layers = CASES[arch]
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    return arch, model, x, layers


# ----------------------------------------------------------------------------- model state


def snapshot(model):
    return {
        "training": [m.training for m in model.modules()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def assert_untouched(model, snap):
    for name, m in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert not getattr(m, attr), f"{name or 'model'} kept {attr}"
    assert [m.training for m in model.modules()] == snap["training"]
    assert [getattr(m, "inplace", None) for m in model.modules()] == snap["inplace"]
    assert [p.requires_grad for p in model.parameters()] == snap["requires_grad"]
    assert all(p.grad is None for p in model.parameters())
    state = model.state_dict()
    assert state.keys() == snap["state"].keys()
    for k, v in snap["state"].items():
        assert torch.equal(state[k], v), k


# ----------------------------------------------------------------------------- guided backprop


def test_guided_backprop_matches_reference(zoo):
    arch, model, x, layers = zoo
    ref = guided_copy(model)
    snap = snapshot(model)
    for name, key in layers.items():
        prefix, _ = parts(arch, ref, key)
        with torch.no_grad():
            channel = int(prefix(x)[0].flatten(1).sum(1).argmax())  # a channel that is alive
        expected = ref_guided_backprop(prefix, x, channel)
        got = A.guided_backprop(model, x, name, channel)
        assert got.shape == (3, *x.shape[-2:]) and got.dtype == torch.float32 and got.device.type == "cpu"
        assert torch.linalg.vector_norm(expected) > 0, (arch, name)
        assert rel_err(got, expected) <= 1e-5, (arch, name)
        # Not the plain gradient: the guided rule changed something.
        xg = x.clone().requires_grad_(True)
        plain_prefix, _ = parts(arch, model, key)  # eval mode; autograd.grad leaves .grad alone
        (plain,) = torch.autograd.grad(objective(plain_prefix(xg), channel), xg)
        # Up to the first ReLU's output the gradient is 1 where the ReLU passes: both agree.
        if name not in ("features.0", "features.1", "relu"):
            assert rel_err(plain[0], expected) > 1e-3, (arch, name)
    assert_untouched(model, snap)


def test_guided_backprop_train_mode_frozen_params_inplace_restored():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.train()
    model.layer2.eval()  # mixed flags must come back per module
    model.conv1.weight.requires_grad_(False)
    model.layer1[0].relu.inplace = False
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    snap = snapshot(model)
    assert any(snap["inplace"]) and not all(v for v in snap["inplace"] if v is not None)

    got = A.guided_backprop(model, x, "layer3", 3)
    prefix, _ = resnet_parts(guided_copy(model), "layer3")
    assert rel_err(got, ref_guided_backprop(prefix, x, 3)) <= 1e-5  # ran in eval mode
    assert_untouched(model, snap)
    assert not x.requires_grad and x.grad is None


def test_reused_relu_gets_the_rule_at_every_call():
    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 4, 3, padding=1)
            self.c = nn.Conv2d(4, 2, 3, padding=1)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.c(self.relu(self.b(self.relu(self.a(x)))))

    torch.manual_seed(3)
    model = Reuse()
    x = torch.randn(1, 3, 12, 12)
    ref = guided_copy(model)
    expected = ref_guided_backprop(lambda t: ref.c(ref.relu(ref.b(ref.relu(ref.a(t))))), x, 1)
    got = A.guided_backprop(model, x, "c", 1)
    assert rel_err(got, expected) <= 1e-5
    # Only the first use guided: differs, so the hook really acts at both calls.
    half = ref_guided_backprop(lambda t: ref.c(F.relu(ref.b(ref.relu(ref.a(t))))), x, 1)
    assert rel_err(half, expected) > 1e-3


def test_functional_relu_is_not_modified():
    torch.manual_seed(4)
    conv1, conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 3)

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = conv1, conv2

        def forward(self, x):
            return self.conv2(F.relu(self.conv1(x)))

    x = torch.randn(1, 3, 10, 10, requires_grad=True)
    (plain,) = torch.autograd.grad(objective(Functional()(x), 0), x)
    assert rel_err(A.guided_backprop(Functional(), x.detach(), "conv2", 0), plain[0]) <= 1e-6


def test_works_under_no_grad_and_with_explicit_device():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3))
    x = torch.randn(1, 3, 9, 9)
    expected = A.guided_backprop(model, x, "2", 1)
    with torch.no_grad():
        assert torch.equal(A.guided_backprop(model, x, "2", 1, device="cpu"), expected)
    with torch.inference_mode():
        assert torch.equal(A.guided_backprop(model, x, "2", 1), expected)


# Deep layers of the zoo for the captum comparisons: name -> key of parts(), per arch. The
# default-objective wrapper needs the prefix as an nn.Module, which parts() gives for these.
DEEP = {
    "alexnet": {"features.4": 4, "features.10": 10, "features.11": 11},
    "vgg11": {"features.8": 8, "features.19": 19},
    "resnet18": {"layer2": "layer2", "layer4": "layer4"},
}


def captum_close(got, expected):
    # Same float32 operations in a possibly different order: tight, relative to the map's scale.
    assert torch.linalg.vector_norm(expected) > 0
    return torch.allclose(got, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


def test_position_matches_captum_neuron_guided_backprop(zoo):
    from captum.attr import NeuronGuidedBackprop

    arch, model, x, _ = zoo
    snap = snapshot(model)
    for name, key in DEEP[arch].items():
        layer = model.get_submodule(name)
        with torch.no_grad():
            act = parts(arch, model, key)[0](x)[0]
        channel = int(act.flatten(1).sum(1).argmax())
        # Its strongest neuron, and a weaker one that fires too (its map is not zero).
        strongest = divmod(int(act[channel].argmax()), act.shape[-1])
        firing = [tuple(p) for p in (act[channel] > 0).nonzero().tolist() if tuple(p) != strongest]
        assert firing, (arch, name)
        other = firing[len(firing) // 2]
        for position in ("max", other):
            res = A.guided_backprop_result(model, x, name, channel, position=position)
            assert_untouched(model, snap)
            assert not res.fallback and res.position == (strongest if position == "max" else position)
            with warnings.catch_warnings():  # captum says it sets requires_grad and hooks ReLUs
                warnings.simplefilter("ignore", UserWarning)
                expected = NeuronGuidedBackprop(model, layer).attribute(
                    x.clone(), neuron_selector=(channel, *res.position)
                )[0]
            assert captum_close(res.gradient, expected), (arch, name, channel, position)
            # The tensor API gives the same map.
            assert torch.equal(A.guided_backprop(model, x, name, channel, position=res.position), res.gradient)


class RectifiedResponse(nn.Module):
    """The default objective as a model: (1, 1) = <stop_grad(relu(a_c)), a_c> of prefix(x)."""

    def __init__(self, prefix: nn.Module, channel: int):
        super().__init__()
        self.prefix, self.channel = prefix, channel

    def forward(self, x):
        a = self.prefix(x)[:, self.channel]
        return (torch.relu(a).detach() * a).sum().reshape(1, 1)


def test_default_matches_captum_guided_backprop_of_the_objective(zoo):
    from captum.attr import GuidedBackprop

    arch, model, x, _ = zoo
    snap = snapshot(model)
    for name, key in DEEP[arch].items():
        prefix, _ = parts(arch, model, key)
        assert isinstance(prefix, nn.Module)  # captum hooks the nn.ReLU modules inside it
        with torch.no_grad():
            a = prefix(x)[0]
        channel = int(a.flatten(1).sum(1).argmax())  # fires somewhere
        res = A.guided_backprop_result(model, x, name, channel)
        assert res.position is None and not res.fallback
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            expected = GuidedBackprop(RectifiedResponse(prefix, channel)).attribute(x.clone(), target=0)[0]
        assert captum_close(res.gradient, expected), (arch, name)
        assert torch.equal(A.guided_backprop(model, x, name, channel), res.gradient)
    assert_untouched(model, snap)


def fallback_model():
    """conv "0" -> ReLU "1" -> conv "2" -> ReLU "3" -> pool -> flatten -> linear "6" (3 classes).

    Channel 1 of "2" (and so of "3") is negative everywhere: it never fires. Channel 2 of "2"
    is constant -1 (no weights): every position ties.
    """
    torch.manual_seed(10)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 3, 3), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3),
    )
    with torch.no_grad():
        model[2].bias[1] = -100.0
        model[2].weight[2] = 0.0
        model[2].bias[2] = -1.0
        model[6].bias[2] = -100.0  # class 2 is negative: its "rectified response" is zero
    return model.eval()


def test_channel_that_never_fires_falls_back_to_its_strongest_position():
    model = fallback_model()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(11))
    snap = snapshot(model)
    ref = guided_copy(model)
    with torch.no_grad():
        a = ref[:3](x)[0, 1]  # (8, 8)
    assert a.max() < 0
    strongest = divmod(int(a.argmax()), a.shape[1])

    res = A.guided_backprop_result(model, x, "2", 1)
    assert isinstance(res, A.GuidedBackpropResult)
    assert res.fallback and res.position == strongest
    expected = ref_guided_backprop(ref[:3], x, 1, position=strongest)
    assert torch.linalg.vector_norm(expected) > 0 and rel_err(res.gradient, expected) <= 1e-6
    assert torch.equal(A.guided_backprop(model, x, "2", 1), res.gradient)  # the documented fallback
    assert torch.equal(A.guided_backprop(model, x, "2", 1, position="max"), res.gradient)
    # Asked for explicitly, a position is never a fallback.
    assert not A.guided_backprop_result(model, x, "2", 1, position="max").fallback

    # A firing channel of the same layer does not fall back.
    alive = A.guided_backprop_result(model, x, "2", 0)
    assert not alive.fallback and alive.position is None
    assert rel_err(alive.gradient, ref_guided_backprop(ref[:3], x, 0)) <= 1e-6

    # Ties: the first position in row-major order.
    assert A.guided_backprop_result(model, x, "2", 2, position="max").position == (0, 0)
    tied = A.guided_backprop_result(model, x, "2", 2)
    assert tied.fallback and tied.position == (0, 0) and not tied.gradient.any()  # no weights

    # The layer is the ReLU itself: nothing passes a ReLU that is off everywhere.
    off = A.guided_backprop_result(model, x, "3", 1)
    assert off.fallback and off.position == (0, 0) and not off.gradient.any()
    assert off.gradient.shape == (3, 12, 12) and off.gradient.dtype == torch.float32
    assert_untouched(model, snap)


def test_vector_layer_default_and_fallback():
    # A (1, C) layer: the channel is one neuron a; the default is relu(a) * (guided gradient of a).
    model = fallback_model()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(12))
    snap = snapshot(model)
    ref = guided_copy(model)
    with torch.no_grad():
        logits = ref(x)[0]
    live = int(logits[:2].argmax())
    assert logits[live] > 0 and logits[2] < 0
    res = A.guided_backprop_result(model, x, "6", live)
    assert res == (res.gradient, None, False)
    assert rel_err(res.gradient, ref_guided_backprop(ref, x, live)) <= 1e-6
    # Class 2 never fires: the plain guided gradient of its neuron instead of zeros.
    off = A.guided_backprop_result(model, x, "6", 2)
    assert off.fallback and off.position is None
    xg = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(ref(xg)[0, 2], xg)
    assert torch.linalg.vector_norm(expected) > 0 and rel_err(off.gradient, expected[0]) <= 1e-6
    assert_untouched(model, snap)


def test_position_forms():
    model = small_model()
    x = torch.randn(1, 3, 10, 10, generator=torch.Generator().manual_seed(13))
    expected = ref_guided_backprop(guided_copy(model)[:3], x, 1, position=(2, 4))
    for position in ((2, 4), [2, 4], (np.int64(2), np.int32(4)), (torch.tensor(2), 4)):
        res = A.guided_backprop_result(model, x, "2", 1, position=position)
        assert res.position == (2, 4) and type(res.position) is tuple
        assert all(type(v) is int for v in res.position)
        assert rel_err(res.gradient, expected) <= 1e-6


def test_errors_of_the_model_become_model_errors():
    class NoBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            return inp.clone()

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("no backward here")

    class Wall(nn.Module):
        def forward(self, inp):
            return NoBackward.apply(inp)

    model = small_model()
    model.insert(1, Wall())  # between conv "0" and the ReLU
    model.train()
    snap = snapshot(model)
    x = torch.randn(1, 3, 10, 10)
    for position in (None, "max", (1, 1)):
        with pytest.raises(ModelError, match="no backward here"):
            A.guided_backprop(model, x, "3", 0, position=position)
        assert_untouched(model, snap)
    # Up to the wall the backward is fine.
    assert A.guided_backprop(model, x, "0", 0).shape == (3, 10, 10)
    boom = small_model()
    boom.insert(3, Boom())
    snap = snapshot(boom)
    with pytest.raises(ModelError, match="boom"):
        A.guided_backprop(boom, x, "5", 0, position="max")
    assert_untouched(boom, snap)


# ----------------------------------------------------------------------------- Grad-CAM


def test_grad_cam_matches_reference(zoo):
    arch, model, x, layers = zoo
    ref = copy.deepcopy(model).eval()
    for m in ref.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False  # the activation is a leaf here; in-place ReLU would refuse it
    snap = snapshot(model)
    for name, key in layers.items():
        prefix, rest = parts(arch, ref, key)
        if rest is None:
            continue
        for target in (None, 7) if name == list(layers)[-1] else (None,):
            expected, expected_target = ref_grad_cam(prefix, rest, x, target)
            cam, got_target = A.grad_cam(model, x, name, target)
            assert got_target == expected_target
            assert cam.shape == x.shape[-2:] and cam.dtype == torch.float32
            assert float(cam.min()) >= 0.0 and float(cam.max()) <= 1.0
            if torch.linalg.vector_norm(expected) == 0:
                assert not cam.any()
            else:
                assert float(cam.max()) == pytest.approx(1.0)
                assert rel_err(cam, expected) <= 1e-5, (arch, name, target)
    assert_untouched(model, snap)


def test_grad_cam_layer_modified_in_place_later():
    # ResNet's BasicBlock does `out = bn2(...); out += identity`: the captured bn2 output must
    # keep its own values and gradient, not those of the sum.
    torch.manual_seed(8)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    ref = copy.deepcopy(model).eval()
    block = ref.layer3[0]
    with torch.no_grad():
        h = nn.Sequential(ref.conv1, ref.bn1, ref.relu, ref.maxpool, ref.layer1, ref.layer2)(x)
        identity = block.downsample(h)

    def prefix(_):
        return block.bn2(block.conv2(F.relu(block.bn1(block.conv1(h)))))

    def rest(a):
        out = ref.layer4(ref.layer3[1](F.relu(a + identity)))
        return ref.fc(torch.flatten(ref.avgpool(out), 1))

    expected, _ = ref_grad_cam(prefix, rest, x, 3)
    cam, target = A.grad_cam(model, x, "layer3.0.bn2", 3)
    assert target == 3 and rel_err(cam, expected) <= 1e-5


def test_runs_in_eval_mode_without_weight_gradients_and_keeps_user_hooks():
    seen = []

    class Probe(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = [model]  # a list: not registered as a submodule

        def forward(self, x):
            params = list(self.model[0].parameters())
            seen.append((self.training, torch.is_grad_enabled(), any(p.requires_grad for p in params)))
            return x

    model = small_model().train()
    model.insert(2, Probe(model))
    calls = []
    handle = model[0].register_forward_hook(lambda m, i, o: calls.append(1))
    A.guided_backprop(model, torch.randn(1, 3, 10, 10), "3", 0)
    with torch.no_grad():
        A.grad_cam(model, torch.randn(1, 3, 10, 10), "3")
    assert seen == [(False, True, False)] * 2
    assert len(calls) == 2 and len(model[0]._forward_hooks) == 1  # the user's hook ran and stayed
    handle.remove()
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_grad_cam_all_zero_map_stays_zero():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    nn.init.zeros_(model[0].weight)
    nn.init.zeros_(model[0].bias)
    cam, target = A.grad_cam(model, torch.randn(1, 3, 8, 8), "1", 2)
    assert target == 2 and cam.shape == (8, 8)
    assert not torch.isnan(cam).any() and not cam.any()


# ----------------------------------------------------------------------------- predictions


def test_predictions_and_top_classes():
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0]])
    probs = torch.softmax(logits[0].double(), 0)
    assert A.top_classes(logits, k=2) == [(1, pytest.approx(float(probs[1]))), (2, pytest.approx(float(probs[2])))]
    named = A.predictions(logits, k=3, labels=["a", "b", "c", "d"])
    assert [label for label, _ in named] == ["b", "c", "a"]
    assert A.predictions(logits, k=10)[-1][0] == 3 and len(A.predictions(logits, k=10)) == 4
    assert sum(p for _, p in A.predictions(logits, k=4)) == pytest.approx(1.0)
    assert A.class_scores(torch.zeros(1, 5, 1, 1)).shape == (5,)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: A.predictions(torch.zeros(1, 4), k=0), ValueError, "k must be at least 1"),
        (lambda: A.predictions(torch.zeros(1, 4), k=2.5), TypeError, "k must be an int"),
        (lambda: A.predictions(torch.zeros(1, 4), labels=["a"]), ValueError, "labels has 1 names"),
        (lambda: A.predictions(torch.zeros(1, 4), labels="abcd"), TypeError, "labels must be a list"),
        (lambda: A.predictions({"out": torch.zeros(1, 4)}), TypeError, "output must be a tensor"),
        (lambda: A.predictions(torch.zeros(1, 21, 8, 8)), ValueError, "not a vector of class scores"),
        (lambda: A.predictions(torch.zeros(2, 4)), ValueError, "not a vector of class scores"),
    ],
)
def test_prediction_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ----------------------------------------------------------------------------- errors leave the model untouched


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def small_model():
    torch.manual_seed(6)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda m, x: A.guided_backprop(m, x, "2", 4), ValueError, "channel 4 is out of range"),
        (lambda m, x: A.guided_backprop(m, x, "2", -1), ValueError, "channel -1 is out of range"),
        (lambda m, x: A.guided_backprop(m, x, "2", True), TypeError, "channel must be an int"),
        (lambda m, x: A.guided_backprop(m, x, "conv9", 0), ValueError, "name 'conv9' is not a module"),
        (lambda m, x: A.guided_backprop(m, x, 2, 0), TypeError, "name must be a module name"),
        (lambda m, x: A.guided_backprop(m, x[0], "2", 0), ValueError, r"x must have shape \(1, C, H, W\)"),
        (lambda m, x: A.guided_backprop(m, x.numpy(), "2", 0), TypeError, "x must be a torch.Tensor"),
        (lambda m, x: A.guided_backprop(m, x, "2", 0, position=5), TypeError,
         r"position must be None, 'max' or \(i, j\), got int"),
        (lambda m, x: A.guided_backprop(m, x, "2", 0, position={"i": 1}), TypeError, "position must be None"),
        (lambda m, x: A.guided_backprop(m, x, "2", 0, position="min"), ValueError,
         r"position must be None, 'max' or \(i, j\), got 'min'"),
        (lambda m, x: A.guided_backprop(m, x, "2", 0, position=(1,)), ValueError,
         r"position must be a pair \(i, j\), got 1 values"),
        (lambda m, x: A.guided_backprop(m, x, "2", 0, position=[1, 2, 3]), ValueError,
         r"position must be a pair \(i, j\), got 3 values"),
        (lambda m, x: A.guided_backprop(m, x, "2", 0, position=(1.5, 2)), TypeError,
         r"position\[0\] \(the row i\) must be an int, got float"),
        (lambda m, x: A.guided_backprop(m, x, "2", 0, position=(1, True)), TypeError,
         r"position\[1\] \(the column j\) must be an int, got a bool"),
        (lambda m, x: A.guided_backprop(m, x, "2", 0, position=(6, 0)), ValueError,
         r"position \(6, 0\) is out of range for layer '2', whose maps are 6 x 6; use 0 <= i < 6"),
        (lambda m, x: A.guided_backprop(m, x, "2", 0, position=(0, -1)), ValueError,
         r"position \(0, -1\) is out of range.*0 <= j < 6"),
        (lambda m, x: A.guided_backprop(m, x, "6", 0, position="max"), ValueError,
         r"position='max' needs a layer with spatial maps, but layer '6' outputs \(1, 3\)"),
        (lambda m, x: A.guided_backprop(m, x, "2", 4, position="max"), ValueError, "channel 4 is out of range"),
        (lambda m, x: A.grad_cam(m, x, "6"), ValueError, "layer '6' outputs"),
        (lambda m, x: A.grad_cam(m, x, "2", 3), ValueError, "target 3 is out of range"),
        (lambda m, x: A.grad_cam(m, x, "2", "cat"), TypeError, "target must be an int"),
    ],
)
def test_bad_arguments_raise_and_restore(call, exc, match):
    model = small_model().train()
    x = torch.randn(1, 3, 10, 10)
    snap = snapshot(model)
    with pytest.raises(exc, match=match):
        call(model, x)
    assert_untouched(model, snap)


def test_forward_that_raises_restores_model():
    model = small_model()
    model.insert(3, Boom())  # after "2", before the classifier
    model.train()
    model[2].weight.requires_grad_(False)
    snap = snapshot(model)
    x = torch.randn(1, 3, 10, 10)
    with pytest.raises(RuntimeError, match="boom"):
        A.grad_cam(model, x, "2")
    assert_untouched(model, snap)
    with pytest.raises(RuntimeError, match="boom"):
        A.guided_backprop(model, x, "5", 0)  # Boom runs before layer "5"
    assert_untouched(model, snap)
    # Stops right after the wanted layer: Boom (after it) is never reached.
    assert A.guided_backprop(model, x, "2", 0).shape == (3, 10, 10)
    assert_untouched(model, snap)


def test_grad_cam_rejects_non_class_output():
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU())  # outputs a (1, 5, h, w) map
    snap = snapshot(model)
    with pytest.raises(ValueError, match="not a vector of class scores"):
        A.grad_cam(model, torch.randn(1, 3, 8, 8), "0")
    assert_untouched(model, snap)


# ----------------------------------------------------------------------------- display


def test_normalize_for_display():
    g = torch.randn(3, 6, 7, generator=torch.Generator().manual_seed(7))
    img = A.normalize_for_display(g)
    assert img.shape == (6, 7, 3) and img.dtype == np.uint8
    flat = g.permute(1, 2, 0).numpy().ravel()
    # Monotonic in the gradient, mean near mid-grey.
    order = np.argsort(flat, kind="stable")
    assert (np.diff(img.ravel()[order].astype(int)) >= 0).all()
    assert abs(float(A.normalize_for_display(g - g.mean()).mean()) - 127.5) < 20
    spike = torch.zeros(3, 4, 4)
    spike[0, 0, 0] = 100.0
    out = A.normalize_for_display(spike, n_std=1.0)
    assert out[0, 0, 0] == 255 and out[1, 1, 1] < 128  # clipped outlier; zeros below the mean
    assert (A.normalize_for_display(torch.zeros(3, 2, 2)) == 128).all()
    assert A.normalize_for_display(np.ones((1, 2, 3))).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="NaN"):
        A.normalize_for_display(torch.full((3, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        A.normalize_for_display(torch.zeros(2, 2))


# ----------------------------------------------------------------------------- real SqueezeNet


@pytest.fixture(scope="module")
def squeezenet_on_cat():
    from PIL import Image
    from skimage.data import chelsea

    model = torchvision.models.squeezenet1_0(weights=None)
    state = torch.load(SQUEEZENET, weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.eval()
    # Caffe preprocessing: shorter side to 256, centre crop 227, RGB->BGR, 0..255, minus mean BGR.
    img = Image.fromarray(chelsea())  # 451 x 300
    w, h = img.size
    img = img.resize((round(w * 256 / h), 256), Image.BILINEAR)  # 385 x 256
    left, top = (img.size[0] - 227) // 2, (img.size[1] - 227) // 2  # (79, 14)
    arr = np.asarray(img.crop((left, top, left + 227, top + 227)), dtype=np.float32)
    bgr = arr[:, :, ::-1] - np.array([104.0, 117.0, 123.0], dtype=np.float32)
    x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None]
    return model, x


# The 227 x 227 crop covers original pixels x 79..306 / 1.173 ~ 67..261, y 12..206: the cat's face
# fills it. Eyes sit near crop (65, 83) and (190, 103), the nose near (145, 190); background shows
# only along the right edge (x > ~210) and the top-right corner. Box (x0, y0, x1, y1) around the
# face, eyes to mouth, excluding that background:
CAT_BOX = (20, 40, 210, 227)


@pytest.mark.parametrize("layer", ["features.12", "features.12.expand3x3", "classifier.1"])
def test_squeezenet_cat_grad_cam(squeezenet_on_cat, layer):
    model, x = squeezenet_on_cat
    snap = snapshot(model)
    with torch.no_grad():
        out = model(x)
    labels = torchvision.models.SqueezeNet1_0_Weights.IMAGENET1K_V1.meta["categories"]
    top = A.top_classes(out, k=5)
    assert 281 <= top[0][0] <= 285
    assert A.predictions(out, k=1, labels=labels)[0][0] == labels[top[0][0]]
    assert "cat" in labels[top[0][0]]

    cam, target = A.grad_cam(model, x, layer)
    assert target == top[0][0] and cam.shape == (227, 227)
    y, xx = divmod(int(cam.argmax()), 227)
    x0, y0, x1, y1 = CAT_BOX
    assert x0 <= xx < x1 and y0 <= y < y1, (layer, (xx, y))
    outside = torch.ones_like(cam, dtype=torch.bool)
    outside[y0:y1, x0:x1] = False
    assert float(cam[~outside].mean()) > float(cam[outside].mean())
    assert_untouched(model, snap)


def test_squeezenet_guided_backprop_matches_reference(squeezenet_on_cat):
    # Fire modules: in-place ReLUs whose outputs are concatenated.
    model, x = squeezenet_on_cat
    snap = snapshot(model)
    ref = guided_copy(model)
    got = A.guided_backprop(model, x, "features.12", 489)
    expected = ref_guided_backprop(ref.features[:13], x, 489)
    assert torch.linalg.vector_norm(expected) > 0
    assert rel_err(got, expected) <= 1e-5
    assert_untouched(model, snap)


# ----------------------------------------------------------------------------- first layer, two photos


@pytest.fixture(scope="module")
def squeezenet_two_photos():
    """The bundled trained SqueezeNet, and the cat photo and the astronaut, Caffe-preprocessed."""
    from PIL import Image
    from skimage.data import astronaut

    import fmwidget

    transform = fmwidget.caffe_transform()
    photos = {
        "cat": transform(fmwidget.sample_image())[None],
        "astronaut": transform(Image.fromarray(astronaut()))[None],
    }
    return fmwidget.pretrained_squeezenet(), photos


def correlation(a, b):
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (a.norm() * b.norm()))


def shift2_change(g):
    """How much the map changes under a 2-pixel shift, relative to its size, away from the border.

    0 for a map that repeats every 2 pixels (the filter tiled at stride 2).
    """
    g = g[:, 8:-8, 8:-8]
    return float(
        (torch.linalg.vector_norm(g[:, 2:] - g[:, :-2]) + torch.linalg.vector_norm(g[:, :, 2:] - g[:, :, :-2]))
        / (2 * torch.linalg.vector_norm(g))
    )


@pytest.mark.parametrize("channel", [5, 20])
def test_first_layer_shows_the_image_not_the_filter(squeezenet_two_photos, channel):
    # features.0 is Conv2d(3, 96, 7, stride=2) straight on the input: no ReLU before it. The old
    # definition (gradient of a_c.sum()) is the filter tiled at stride 2, the same for every
    # photo; it is computed here to show that it fails the same checks.
    model, photos = squeezenet_two_photos
    snap = snapshot(model)
    conv = model.features[0]
    new, old = {}, {}
    for key, x in photos.items():
        xg = x.clone().requires_grad_(True)
        a = conv(xg)[0, channel]
        assert float((a > 0).float().mean()) > 0.2, key  # the channel fires on both photos
        (old_grad,) = torch.autograd.grad(a.sum(), xg)
        old[key] = old_grad[0]
        res = A.guided_backprop_result(model, x, "features.0", channel)
        assert not res.fallback and res.position is None
        new[key] = res.gradient
        # Closed form: the transposed convolution of the rectified response with the filter.
        expected = F.conv_transpose2d(
            torch.relu(a.detach())[None, None], conv.weight[channel : channel + 1].detach(),
            stride=conv.stride, padding=conv.padding,
        )[0]
        assert expected.shape == new[key].shape
        assert rel_err(new[key], expected) <= 1e-5, key

    # Different photos, different maps; the old maps were identical.
    assert abs(correlation(new["cat"], new["astronaut"])) < 0.3
    assert correlation(old["cat"], old["astronaut"]) > 0.999
    for key in photos:
        # Not 2x2-periodic, and not the tiled filter; the old map was both.
        assert shift2_change(new[key]) > 0.2, key
        assert shift2_change(old[key]) < 1e-4, key
        assert abs(correlation(new[key], old[key])) < 0.5, key
    assert_untouched(model, snap)


def test_normalize_for_display_of_a_rectified_response(squeezenet_two_photos):
    # A channel that fires on a small part of the cat photo: the gradient is exactly zero away
    # from it. The picture should be mid-grey there, with strokes of both signs where it fires,
    # and only a few saturated pixels.
    model, photos = squeezenet_two_photos
    x = photos["cat"]
    with torch.no_grad():
        fires = model.features[0](x)[0, 77] > 0
    assert 0.01 < float(fires.float().mean()) < 0.2
    g = A.guided_backprop(model, x, "features.0", 77)
    img = A.normalize_for_display(g).astype(int)
    assert img.shape == (227, 227, 3)
    zero = (g == 0).all(0).numpy()
    assert 0.5 < zero.mean() < 0.99
    assert (abs(img[zero] - 128) <= 2).all()
    assert (img[~zero] >= 200).any() and (img[~zero] <= 55).any()
    assert ((img == 0) | (img == 255)).mean() < 0.02
    assert abs(img.mean() - 127.5) < 2
