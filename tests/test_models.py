"""Model names, the offline error and fallback, the bundled SqueezeNet, and the model sweep."""

from __future__ import annotations

import urllib.error
import warnings

import pytest
import torch
import torchvision
from _support import (
    browser_state,
    one_thread,  # noqa: F401  (an autouse fixture)
    payload,
)

from fmwidget import FeatureMapExplorer, models, sample_image


def _offline(monkeypatch, tmp_path):
    """No cached weights and no network: the hub download fails as it does on this machine."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match="Did you mean 'resnet50'"):
        models.resolve_model("resnet5O")


def test_not_a_module():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        FeatureMapExplorer(42, sample_image())


def test_offline_name_explains_how_to_pass_a_module(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(ConnectionError, match=r"torchvision.models.resnet18\(weights=None\)") as err:
        FeatureMapExplorer("resnet18", sample_image())
    assert "load_state_dict" in str(err.value)


def test_demo_model_falls_back_to_bundled_squeezenet_offline(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolved = models.demo_model()
    assert any("could not be downloaded" in str(w.message) for w in caught)
    assert resolved.name.startswith("squeezenet1_0") and resolved.notes
    with FeatureMapExplorer(resolved.module, sample_image(), transform=resolved.transform, labels=resolved.labels) as w:
        label, prob = w.predictions(1)[0]
    assert label in {"Egyptian cat", "tabby", "tiger cat"} and prob > 0.5


def test_bundled_squeezenet_by_name():
    with FeatureMapExplorer("squeezenet", sample_image()) as w:
        assert w.input_tensor.shape == (1, 3, 227, 227)
        header = browser_state(w)["_header"]
        assert header["model"].startswith("squeezenet1_0")
        assert w.predictions(1)[0][0] == "Egyptian cat"
        assert header["predictions"][0]["label"] == "Egyptian cat" and header["predictions_note"] == ""
        assert w.filters("features.0").shape == (96, 3, 7, 7)
        w.view = "filters"  # Caffe inputs are B, G, R: the first layer's composite flips them back
        assert payload(w, "_filters")["bgr"] is True


CLASSIFIERS = sorted(torchvision.models.list_models(module=torchvision.models))

# Each model runs in its own process: the large ones (ViT-H/14, RegNetY-128GF) take several GB,
# and one process for all 80 would keep the allocator's high-water mark from every model.
_SWEEP = r"""
import sys, torch, torchvision
from fmwidget import FeatureMapExplorer
name = sys.argv[1]
torch.manual_seed(0)
model = torchvision.models.get_model(name, weights=None).eval()
size = {"inception_v3": 299, "vit_h_14": 518}.get(name, 224)
try:
    w = FeatureMapExplorer(model, torch.randn(1, 3, size, size))
except (ValueError, TypeError) as err:  # a clear message is acceptable, a crash is not
    print("REFUSED", err)
    sys.exit(0)
state = w.get_state()
assert w.layer_names and state["_maps"]["layer"] == w.layer_names[0] and state["_error"] == ""
w.layer = w.layer_names[-1]
assert w.get_state()["_maps"]["layer"] == w.layer_names[-1]
w.view = "filters"
assert w.get_state()["_filters"]["layer"] == w.layer_names[-1] and w.get_state()["_error"] == ""
n = len(w.layer_names)
w.close()
assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0
print("OK", n)
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_torchvision_classifier_constructs(name):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _SWEEP, name], capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith(("OK", "REFUSED")), run.stdout
    if run.stdout.startswith("REFUSED"):
        assert "model" in run.stdout or "layers" in run.stdout


def test_bundled_weights_are_the_shared_file():
    import hashlib

    digest = hashlib.sha256(models.SQUEEZENET_WEIGHTS.read_bytes()).hexdigest()
    assert digest == "2f8b330b222c778977091ef6dd2417056712cb0d8d4115ac30e9f69b0ede6d1b"


def test_resolved_model_keeps_name_transform_and_labels():
    resolved = models.resolve_model("squeezenet")
    with FeatureMapExplorer(resolved, sample_image()) as w:
        assert browser_state(w)["_header"]["model"] == resolved.name
        assert w.input_tensor.shape[-1] == 227  # its Caffe transform, not the ImageNet default
        assert isinstance(w.predictions(1)[0][0], str)
