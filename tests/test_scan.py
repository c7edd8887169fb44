"""fmwidget.scan (every channel's top images over many images) and fmwidget.receptive.

Checked through the public functions against independent computations: per-image channel
maxima from plain hooks, and receptive fields from the textbook formula for conv/pool chains.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from _support import TinyCNN, assert_untouched, hooks_of, snapshot
from PIL import Image
from torch import nn

from fmwidget import caffe_transform, imagenet_transform, pretrained_squeezenet
from fmwidget.capture import ModelError
from fmwidget.preprocess import display_image, model_input
from fmwidget.receptive import ReceptiveField, receptive_field
from fmwidget.scan import ScanResult, TopImage, scan

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _one_thread():
    # Small models beside other work on two cores: one torch thread is several times faster
    # than two there (OpenMP threads wait for each other when a core is taken).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)  # left in train mode: scan must restore it


def _images(n: int, size: int = 64, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(3, size, size, generator=gen) for _ in range(n)]


def _reference(model, inputs, layers, batch_size):
    """Every image's channel maxima and their first positions, from a plain hook that copies
    the output (an in-place ReLU after the layer must not change it), stable-sorted."""
    model = copy.deepcopy(model).eval()
    modules = dict(model.named_modules())
    outs = {name: [] for name in layers}
    seen: set = set()

    def make(name):
        def hook(_m, _i, out):
            if name not in seen:
                seen.add(name)
                outs[name].append(out.detach().clone())

        return hook

    handles = [modules[name].register_forward_hook(make(name)) for name in layers]
    try:
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                seen.clear()
                model(torch.cat([x.reshape(1, *x.shape[-3:]) for x in inputs[start:start + batch_size]]))
    finally:
        for h in handles:
            h.remove()
    ref = {}
    for name in layers:
        flat = torch.cat(outs[name]).flatten(2)  # (N, C, H*W)
        maxima, where = flat.amax(dim=2).t(), flat.argmax(dim=2).t()  # (C, N)
        order = torch.sort(maxima, dim=1, descending=True, stable=True).indices
        ref[name] = (maxima.gather(1, order), order, where.gather(1, order), maxima)
    return ref


def _assert_matches(res: ScanResult, ref: dict, k: int) -> None:
    for name, (scores, indices, positions, _) in ref.items():
        kept = min(k, scores.shape[1])
        assert res.scores[name].shape == (scores.shape[0], kept)
        assert torch.equal(res.scores[name], scores[:, :kept]), name
        assert torch.equal(res.indices[name], indices[:, :kept]), name
        assert torch.equal(res.positions[name], positions[:, :kept]), name


def _analytic(chain, size):
    """Textbook receptive field of a chain of convs and pools: (jump, start, end) of position
    0's box [start, end), per axis (square kernels)."""
    jump, start, end = 1, 0, 1
    for layer in chain:
        if not isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            continue
        as_int = lambda v: v if isinstance(v, int) else v[0]
        k, s, p = as_int(layer.kernel_size), as_int(layer.stride), as_int(layer.padding)
        d = as_int(getattr(layer, "dilation", 1))
        start, end = start - p * jump, end + (-p + (k - 1) * d) * jump
        jump *= s
    return jump, start, end


def _analytic_box(chain, size, i, j):
    jump, start, end = _analytic(chain, size)
    span = lambda q: (max(0, start + q * jump), min(size, end + q * jump))
    (y0, y1), (x0, x1) = span(i), span(j)
    return x0, y0, x1, y1


def _save(path: Path, seed: int, size=(40, 30)) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


# --------------------------------------------------------------------------------------------
# against an independent computation
# --------------------------------------------------------------------------------------------


def test_resnet18_matches_reference():
    model = _resnet18()
    before = snapshot(model)
    inputs = _images(20)
    layers = ["conv1", "relu", "layer1.0.conv2", "layer3.1.bn2"]  # relu: reused, first call
    calls = []
    res = scan(model, inputs, layers=layers, k=5, batch_size=6,
               progress=lambda *a: calls.append(a))
    assert_untouched(model, before)
    assert res.n_images == 20 and not res.stopped and res.reason is None
    assert res.shapes == {"conv1": (64, 32, 32), "relu": (64, 32, 32),
                          "layer1.0.conv2": (64, 16, 16), "layer3.1.bn2": (256, 4, 4)}
    assert res.input_size == (64, 64) and list(res.sources) == list(range(20))
    # Same batches as the scan: the same arithmetic, so the maxima must be equal exactly.
    _assert_matches(res, _reference(model, inputs, layers, 6), 5)
    assert [c[:2] for c in calls] == [(6, 20), (12, 20), (18, 20), (20, 20)]
    assert all(c[2] > 0 for c in calls)

    # One image at a time (other conv algorithms): equal to float32 rounding.
    single = _reference(model, inputs, layers, 1)
    for name in layers:
        expected = single[name][0][:, :5]
        assert torch.allclose(res.scores[name], expected, rtol=1e-4, atol=1e-5), name
        top = res.top(name, 7)
        assert [t.score for t in top] == res.scores[name][7].tolist()
        assert all(isinstance(t.score, float) for t in top)


def test_long_scan_where_few_channels_change():
    # The first images are much stronger: later batches change few channels' top k (the
    # merge then touches only those rows), and the result still equals the reference.
    torch.manual_seed(0)
    model = TinyCNN().eval()
    inputs = [x * (4.0 if i < 6 else 1.0) for i, x in enumerate(_images(40, size=16))]
    layers = ["conv1", "dw", "grouped"]
    res = scan(model, inputs, layers=layers, k=3, batch_size=5)
    _assert_matches(res, _reference(model, inputs, layers, 5), 3)
    assert int(res.indices["conv1"].max()) < 40


def test_ties_keep_earlier_images_first():
    # Integer weights and images: exact arithmetic, so equal maxima are exactly equal.
    model = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.MaxPool2d(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1, 1], [1, -1, 0]]).reshape(2, 3, 1, 1))
    levels = [2, 5, 2, 5, 9, 5, 2]  # constant images: every position ties too
    images = [torch.full((3, 8, 8), float(v)) for v in levels]
    res = scan(model, images, layers=["0", "1"], k=4, batch_size=3)
    for name in ("0", "1"):
        assert res.indices[name][0].tolist() == [4, 1, 3, 5]  # 9, then the 5s in source order
        assert res.indices[name][1].tolist() == [0, 1, 2, 3]  # all 0: the first four
        assert res.positions[name].eq(0).all()  # the first position of a constant map
    assert res.scores["1"][0].tolist() == [27.0, 15.0, 15.0, 15.0]


def test_squeezenet_natural_images_match_reference():
    skimage_data = pytest.importorskip("skimage.data")
    images = [skimage_data.chelsea(), skimage_data.astronaut(), skimage_data.coffee(),
              skimage_data.rocket(), skimage_data.camera()]  # camera is gray: read as RGB
    model = pretrained_squeezenet()
    before = snapshot(model)
    pre = caffe_transform()
    layers = ["features.0", "features.3.expand3x3", "features.12.expand3x3"]
    res = scan(model, images, layers=layers, k=3, batch_size=2, transform=pre)
    assert_untouched(model, before)
    inputs = [model_input(img, pre) for img in images]
    _assert_matches(res, _reference(model, inputs, layers, 2), 3)
    # A patch is the crop of the picture the model saw.
    best = res.top("features.3.expand3x3", 10)[0]
    x0, y0, x1, y1 = best.box
    picture = display_image(inputs[best.index], pre)
    assert np.array_equal(np.asarray(res.patch(best)), picture[y0:y1, x0:x1])
    assert res.patch(best).size == (x1 - x0, y1 - y0)
    # Fire module 3's 3x3 expand: conv 7x7/2, max-pool 3x3/2, then 3x3: 19 pixels, jump 4.
    rf = res.receptive_field("features.3.expand3x3")
    assert rf.size == (19, 19) and rf.jump == (4, 4)
    assert best.box == rf.box(*best.position)


def test_reused_module_uses_first_call(tiny_model):
    images = _images(5, size=16)
    res = scan(tiny_model, images, layers=["relu"], k=5)
    with torch.no_grad():
        first = torch.stack([tiny_model.relu(tiny_model.conv1(x[None]))[0] for x in images])
    assert res.shapes["relu"] == (8, 16, 16)
    expected = first.flatten(2).amax(2).t()
    assert torch.allclose(res.scores["relu"], expected.sort(dim=1, descending=True).values)


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------


def test_folder_source_recursive_sorted(tmp_path):
    arrays = {
        "b.png": _save(tmp_path / "b.png", 1),
        "a.JPG": None,
        "sub/c.webp": None,
        "sub/deeper/d.BMP": _save(tmp_path / "sub/deeper/d.BMP", 4),
    }
    Image.fromarray(arrays["b.png"]).save(tmp_path / "a.JPG", quality=95)
    Image.fromarray(arrays["b.png"]).save(tmp_path / "sub/c.webp", lossless=True)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_text("skipped")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "x.png").write_text("skipped")
    model = TinyCNN().eval()
    res = scan(model, str(tmp_path), layers=["conv1"], k=2, transform=imagenet_transform(40, 32))
    names = [Path(p).relative_to(tmp_path).as_posix() for p in res.sources]
    assert names == ["a.JPG", "b.png", "sub/c.webp", "sub/deeper/d.BMP"]
    assert res.n_images == 4
    # Same as the list of the same files; entries name their paths.
    again = scan(model, list(res.sources), layers=["conv1"], k=2, transform=imagenet_transform(40, 32))
    assert torch.equal(again.scores["conv1"], res.scores["conv1"])
    top = res.top("conv1", 3)
    assert top[0].source == res.sources[top[0].index]
    assert res.patch(top[0]).mode == "RGB"
    # A Path works as well.
    assert scan(model, tmp_path, layers=["conv1"], transform=imagenet_transform(40, 32)).n_images == 4


def test_a_file_gone_after_the_scan_gives_a_plain_error(tmp_path):
    for i in range(3):
        _save(tmp_path / f"{i}.png", i)
    res = scan(TinyCNN().eval(), tmp_path, layers=["conv1"], k=3, transform=imagenet_transform(40, 32))
    best = res.top("conv1", 0)[0]
    Path(best.source).unlink()
    with pytest.raises(FileNotFoundError) as info:
        res.patch(best)
    assert Path(best.source).name in str(info.value) and "scan stopped" not in str(info.value)


def test_dataset_pairs_and_one_shot_iterable():
    images = _images(7, size=24)

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return images[i], i % 3  # (image, label): the label is ignored

    model = TinyCNN().eval()
    ref = scan(model, images, layers=["dw"], k=3, batch_size=4)
    res = scan(model, Pairs(), layers=["dw"], k=3, batch_size=4)
    assert torch.equal(res.scores["dw"], ref.scores["dw"])
    entry = res.top("dw", 2)[0]
    assert res.patch(entry).size == (entry.box[2] - entry.box[0], entry.box[3] - entry.box[1])

    totals = []
    gen = ((img, "label") for img in images)
    once = scan(model, gen, layers=["dw"], k=3, batch_size=4,
                progress=lambda done, total, rate: totals.append(total))
    assert torch.equal(once.scores["dw"], ref.scores["dw"]) and totals == [None, None]
    with pytest.raises(TypeError, match=r"source: .*cannot be read again.*indexable"):
        once.patch(once.top("dw", 0)[0])
    # A batch tensor (N, 3, H, W) is a source of model inputs.
    batch = scan(model, torch.stack(images), layers=["dw"], k=3)
    assert torch.equal(batch.scores["dw"], ref.scores["dw"])


# --------------------------------------------------------------------------------------------
# stopping
# --------------------------------------------------------------------------------------------


def test_should_stop_keeps_exactly_the_scanned_batches():
    model = _resnet18()
    before = snapshot(model)
    images = _images(13)
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) > 2  # two batches run, the third is refused

    res = scan(model, images, layers=["layer1.0.conv1"], k=4, batch_size=3, should_stop=should_stop)
    assert_untouched(model, before)
    assert res.stopped and res.reason == "should_stop" and res.n_images == 6
    assert list(res.sources) == list(range(6))
    first6 = scan(model, images[:6], layers=["layer1.0.conv1"], k=4, batch_size=3)
    assert torch.equal(res.scores["layer1.0.conv1"], first6.scores["layer1.0.conv1"])
    assert torch.equal(res.indices["layer1.0.conv1"], first6.indices["layer1.0.conv1"])

    nothing = scan(model, images, layers=["conv1"], should_stop=lambda: True)
    assert nothing.stopped and nothing.n_images == 0 and nothing.shapes == {}
    with pytest.raises(ValueError, match="holds no images"):
        nothing.top("conv1", 0)
    assert_untouched(model, before)


def test_keyboard_interrupt_in_progress_keeps_that_batch():
    model = _resnet18()
    before = snapshot(model)

    def progress(done, total, rate):
        if done == 8:
            raise KeyboardInterrupt

    res = scan(model, _images(20), layers=["conv1", "layer2.0.conv1"], k=3, batch_size=4,
               progress=progress)
    assert res.stopped and res.reason == "KeyboardInterrupt" and res.n_images == 8
    assert int(res.indices["conv1"].max()) < 8
    assert_untouched(model, before)


def test_keyboard_interrupt_in_dataset_drops_the_partial_batch():
    images = _images(12, size=16)

    class Interrupting(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            if i == 7:
                raise KeyboardInterrupt
            return images[i]

    model = TinyCNN()
    before = snapshot(model)
    res = scan(model, Interrupting(), layers=["conv1", "grouped"], k=2, batch_size=3)
    assert res.stopped and res.reason == "KeyboardInterrupt" and res.n_images == 6
    assert_untouched(model, before)
    ref = scan(model, images[:6], layers=["conv1", "grouped"], k=2, batch_size=3)
    assert torch.equal(res.scores["grouped"], ref.scores["grouped"])


def test_keyboard_interrupt_in_forward_pass():
    class Tripwire(nn.Module):
        calls = 0

        def forward(self, x):
            type(self).calls += 1
            if type(self).calls == 3:
                raise KeyboardInterrupt  # after "0" was reduced in this pass
            return x

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), Tripwire(), nn.Conv2d(4, 4, 3))
    before = snapshot(model)
    res = scan(model, _images(10, size=16), layers=["0", "3"], k=3, batch_size=2)
    assert res.stopped and res.reason == "KeyboardInterrupt" and res.n_images == 4
    assert res.scores["0"].shape == (4, 3) and int(res.indices["3"].max()) == 3
    assert_untouched(model, before)
    assert hooks_of(model) == 0


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def _raises(exc, pattern, model, source, **kwargs):
    before = snapshot(model)
    with pytest.raises(exc) as info:
        scan(model, source, layers=kwargs.pop("layers", ["conv1"]), **kwargs)
    assert_untouched(model, before)
    for part in pattern:
        assert part in str(info.value), (part, str(info.value))
    return str(info.value)


def test_bad_folders(tmp_path):
    model = TinyCNN()
    empty = tmp_path / "empty"
    empty.mkdir()
    _raises(ValueError, ["source", "is empty", ".png", "another folder"], model, empty)
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "notes.txt").write_text("hello")
    (texts / "data.csv").write_text("1,2")
    _raises(ValueError, ["source", "no image files", "'notes.txt'", "'data.csv'", "Pass the folder"],
            model, texts)
    _raises(FileNotFoundError, ["source", "no folder at", "Check the spelling"], model,
            str(tmp_path / "missing"))
    _save(tmp_path / "one.png", 0)
    _raises(ValueError, ["source", "is a file, not a folder", "[", "one.png"], model,
            str(tmp_path / "one.png"))


def test_non_image_file_is_named(tmp_path):
    model = TinyCNN()
    for i in range(3):
        _save(tmp_path / f"img{i}.png", i)
    (tmp_path / "img1.png").write_text("this is text, not a PNG")
    msg = _raises(ValueError, ["source[1]", "img1.png", "not an image", "remove or replace that file"],
                  model, tmp_path, transform=imagenet_transform(32, 32))
    assert "kept nothing" in msg
    listed = [str(tmp_path / "img0.png"), str(tmp_path / "img1.png")]
    _raises(ValueError, ["source[1]", "img1.png", "remove it from the list"], model, listed,
            transform=imagenet_transform(32, 32))


def test_wrong_dataset_items():
    model = TinyCNN()

    class Dicts(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"image": torch.rand(3, 16, 16), "label": 1}

    _raises(TypeError, ["source[0]", "dict", "'image'", "(image, label) pairs"], model, Dicts())

    class Labels(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.rand(3, 16, 16) if i == 0 else "cat"

    _raises(ValueError, ["source[1]", "'cat'", "(image, label) pairs", "not labels alone"],
            model, Labels())
    _raises(TypeError, ["source[0]", "int", "(image, label) pairs"], model, iter([3, 4]))
    _raises(TypeError, ["source", "dict"], model, {"a": 1})
    _raises(TypeError, ["source", "one image", "[img]"], model, Image.new("RGB", (8, 8)))
    _raises(ValueError, ["source", "empty list"], model, [])
    _raises(ValueError, ["source", "yielded no images"], model, iter([]))


def test_mismatched_sizes():
    model = TinyCNN()
    images = _images(3, size=16) + [torch.rand(3, 20, 16)]
    _raises(ValueError, ["source[3]", "20 x 16", "16 x 16", "cannot be batched",
                         "transform=fmwidget.imagenet_transform()"], model, images, batch_size=2)
    # Pictures of any size go through the transform's fixed crop.
    pictures = [np.zeros((30, 50, 3), np.uint8), np.zeros((64, 40, 3), np.uint8)]
    res = scan(model, pictures, layers=["conv1"], transform=imagenet_transform(32, 24))
    assert res.input_size == (24, 24)


def test_bad_arguments():
    model = _resnet18()
    images = _images(2, size=32)
    _raises(ValueError, ["layers='layer1.0.conv3'", "Did you mean"], model, images,
            layers=["layer1.0.conv3"])
    _raises(TypeError, ["layers", "['conv1']"], model, images, layers="conv1")
    _raises(ValueError, ["'fc'", "2-D tensor", "(N, C, H, W)"], model, images, layers=["conv1", "fc"])
    _raises(ValueError, ["k must be a positive int"], model, images, k=0)
    _raises(TypeError, ["batch_size"], model, images, batch_size=2.0)
    _raises(TypeError, ["progress"], model, images, progress=3)
    _raises(ValueError, ["device='meta'", "never moves your model"], model, images, device="meta")

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            raise RuntimeError("boom")

    _raises(ModelError, ["source[0]..source[1]", "boom"], Broken(), images)

    res = scan(model, images, layers=["conv1"], k=2)
    with pytest.raises(ValueError, match=r"layer='conv2' .*Did you mean"):
        res.top("conv2", 0)
    with pytest.raises(ValueError, match=r"channel=64 is out of range.*64 channels"):
        res.top("conv1", 64)
    with pytest.raises(ValueError, match="channel=-1"):
        res.top("conv1", -1)
    with pytest.raises(TypeError, match="channel must be an int"):
        res.top("conv1", 1.5)
    with pytest.raises(ValueError, match=r"k=3: the scan kept the top 2.*scan\(\.\.\., k=3\)"):
        res.top("conv1", 0, k=3)
    with pytest.raises(TypeError, match="TopImage"):
        res.patch((0, 0, 1, 1))
    assert len(res.top("conv1", 0, k=1)) == 1


# --------------------------------------------------------------------------------------------
# boxes, patches, receptive fields
# --------------------------------------------------------------------------------------------

CHAINS = {
    "conv3x3_stack": (lambda: [nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
                               nn.Conv2d(8, 8, 3, padding=1)], 20),
    "resnet_stem": (lambda: [nn.Conv2d(3, 16, 7, 2, 3), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                             nn.MaxPool2d(3, 2, 1)], 64),
    "strided_dilated": (lambda: [nn.Conv2d(3, 8, 5, 2), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=2, dilation=2),
                                 nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.AvgPool2d(2, 2)], 60),
    "no_padding": (lambda: [nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, 2), nn.MaxPool2d(2, 2, ceil_mode=True),
                            nn.Conv2d(8, 8, 3)], 41),
}


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_receptive_field_equals_analytic(chain):
    build, size = CHAINS[chain]
    torch.manual_seed(0)
    layers = build()
    model = nn.Sequential(*layers)
    before = snapshot(model)
    last = str(len(layers) - 1)
    rf = receptive_field(model, last, (size, size))
    assert_untouched(model, before)
    jump, start, end = _analytic(layers, size)
    assert rf.jump == (jump, jump) and rf.size == (end - start, end - start)
    h, w = rf.map_size
    for i in range(h):
        for j in range(w):
            assert rf.box(i, j) == _analytic_box(layers, size, i, j), (i, j)


def test_receptive_field_is_measured_inside_inference_mode_too():
    build, size = CHAINS["no_padding"]
    torch.manual_seed(0)
    model = nn.Sequential(*build())
    outside = receptive_field(model, "3", (size, size))
    before = snapshot(model)
    with torch.inference_mode():
        inside = receptive_field(model, "3", (size, size))
    assert inside.measured and inside == outside
    assert_untouched(model, before)
    with pytest.raises(ValueError, match="never moves your model"):
        receptive_field(model, "3", (size, size), device="meta")


def test_receptive_field_of_resnet18_layers():
    model = _resnet18()
    before = snapshot(model)
    stem = [model.conv1, model.maxpool]
    block = stem + [model.layer1[0].conv1, model.layer1[0].conv2]
    for name, chain in (("maxpool", stem), ("layer1.0.conv2", block)):
        rf = receptive_field(model, name, (64, 64))
        jump, start, end = _analytic(chain, 64)
        assert rf.jump == (4, 4) and rf.start == (start, start) and rf.end == (end, end)
    assert rf.size == (27, 27)
    # Deeper than the input is wide: every position sees the whole 64 x 64 input.
    deep = receptive_field(model, "layer4.1.conv2", (64, 64))
    assert all(deep.box(i, j) == (0, 0, 64, 64) for i in range(2) for j in range(2))
    assert_untouched(model, before)
    with pytest.raises(ValueError, match="not a position"):
        deep.box(2, 0)
    with pytest.raises(ValueError, match="input_size"):
        receptive_field(model, "conv1", (64,))


def test_scan_boxes_and_patches_match_analytic():
    build, size = CHAINS["strided_dilated"]
    torch.manual_seed(0)
    layers = build()
    model = nn.Sequential(*layers)
    images = [np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)
              for i in range(6)]
    pre = imagenet_transform(size, size)
    res = scan(model, images, layers=["0", "5"], k=3, batch_size=4, transform=pre)
    for name, chain in (("0", layers[:1]), ("5", layers)):
        for channel in range(8):
            for entry in res.top(name, channel):
                x0, y0, x1, y1 = entry.box
                assert entry.box == _analytic_box(chain, size, *entry.position)
                assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
                patch = res.patch(entry)
                assert patch.size == (x1 - x0, y1 - y0)
                picture = display_image(model_input(images[entry.index], pre), pre)
                assert np.array_equal(np.asarray(patch), picture[y0:y1, x0:x1])
    assert isinstance(res.receptive_field("5"), ReceptiveField)


def test_receptive_field_without_gradient_is_whole_input():
    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.after = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.after(self.conv(x).detach())

    rf = receptive_field(Detached(), "after", (16, 16))
    assert not rf.measured and "no gradient" in rf.note
    assert rf.box(3, 3) == (0, 0, 16, 16)


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------


def test_kept_state_does_not_grow_with_images():
    model = TinyCNN().eval()
    few = scan(model, _images(3, size=16), layers=["conv1", "grouped"], k=4)
    many = scan(model, _images(37, size=16), layers=["conv1", "grouped"], k=4, batch_size=5)
    assert few.scores["conv1"].shape == (8, 3)  # fewer images than k
    for res in (many,):
        for name, channels in (("conv1", 8), ("grouped", 16)):
            for table in (res.scores, res.indices, res.positions):
                assert table[name].shape == (channels, 4) and table[name].device.type == "cpu"
    # The source index is a range (constant size) for a list; only a folder's paths are a list.
    assert isinstance(many.sources, range) and len(many.sources) == 37
    kept = [t for table in (many.scores, many.indices, many.positions) for t in table.values()]
    assert sum(t.numel() for t in kept) == 3 * 4 * (8 + 16)


def test_top_image_is_frozen():
    entry = TopImage("conv1", 0, 0, 1, 2.0, (0, 0), (0, 0, 1, 1), 1)
    with pytest.raises(AttributeError):
        entry.score = 3.0  # type: ignore[misc]
    assert math.isfinite(entry.score)


def test_benchmark_runs():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "scan_bench.py"
    spec = importlib.util.spec_from_file_location("scan_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.run((("resnet18", 32),), n_images=6, batch_size=4, repeats=1)
    case = out["cases"][0]
    assert case["layers"] == 20 and case["n_images"] == 6 and out["threads"] >= 1
    assert case["ratio"] > 0 and len(case["forward_ips"]) == len(case["scan_ips"]) == 1
