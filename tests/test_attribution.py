"""Tests of fmwidget.attribution against references written here from the definitions.

The references never use hooks on the model under test: they run a deep copy
whose nn.ReLU modules are replaced by a guided-ReLU module, and take layer
activations by composing the model's own submodules by hand.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fmwidget import attribution as A
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


def ref_guided_backprop(prefix, x, channel):
    xg = x.clone().requires_grad_(True)
    act = prefix(xg)
    (grad,) = torch.autograd.grad(act[0, channel].sum(), xg)
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
        (plain,) = torch.autograd.grad(plain_prefix(xg)[0, channel].sum(), xg)
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
    (plain,) = torch.autograd.grad(Functional()(x)[0, 0].sum(), x)
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
