"""Tests for fmwidget.loading and fmwidget.preprocess: every input kind, every refusal, and the preprocessing inverses."""

from __future__ import annotations

import base64
import functools
import http.server
import io
import socket
import struct
import threading
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import ResNet18_Weights, SqueezeNet1_0_Weights

from fmwidget import loading
from fmwidget.loading import load_image
from fmwidget.models import SQUEEZENET_WEIGHTS
from fmwidget.preprocess import (
    Preprocess,
    caffe_transform,
    display_image,
    from_torchvision,
    imagenet_transform,
    model_input,
    prepare_input,
)

skimage_data = pytest.importorskip("skimage.data")

# The shared ImageNet SqueezeNet weights, as bundled in the package (same file, same sha256).
SQUEEZENET = SQUEEZENET_WEIGHTS


# ---------------------------------------------------------------------------- helpers, fixtures


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return skimage_data.chelsea()  # (300, 451, 3) uint8, a real photo of a cat


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims width x height RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def expect(exc_type, call, *words, argname="img"):
    """Assert ``call`` raises ``exc_type`` whose message names ``argname`` and holds ``words``."""
    with pytest.raises(exc_type) as info:
        call()
    message = str(info.value)
    assert argname in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return info.value


def rgb_array(img) -> np.ndarray:
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    return np.asarray(img)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client hanging up early is expected
        pass


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path; yields (folder, base URL)."""
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------- paths, bytes, URLs


def test_path_str_and_pathlib(tmp_path, chelsea):
    path = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(path)
    for given in (str(path), path):
        out = load_image(given)
        np.testing.assert_array_equal(rgb_array(out), chelsea)


def test_bytes_bytearray_memoryview_fileobject_dataurl(chelsea):
    data = png_bytes(Image.fromarray(chelsea))
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    for given in (data, bytearray(data), memoryview(data), io.BytesIO(data), url):
        np.testing.assert_array_equal(rgb_array(load_image(given)), chelsea)


def test_jpeg_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red
    pixels[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    out = rgb_array(load_image(path))
    assert out.shape == (40, 20, 3)
    assert out[2, 10, 0] > 200 and out[2, 10, 2] < 60  # red is now on top
    assert out[-3, 10, 2] > 200 and out[-3, 10, 0] < 60


def test_16_bit_png_is_scaled(tmp_path):
    wide = np.array([[0, 32768, 65535, 257]], np.uint16).repeat(4, axis=0)
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    out = rgb_array(load_image(path))
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255, 1])
    assert (out[..., 0] == out[..., 2]).all()


def test_http_url(http_root, chelsea):
    folder, base = http_root
    Image.fromarray(chelsea).save(folder / "cat.png")
    np.testing.assert_array_equal(rgb_array(load_image(f"{base}/cat.png")), chelsea)


def test_http_404_names_url(http_root):
    _, base = http_root
    url = f"{base}/missing.png"
    expect(ValueError, lambda: load_image(url), url, "404")


def test_http_page_that_is_not_an_image(http_root):
    folder, base = http_root
    (folder / "page.html").write_text("<html>not a picture</html>")
    expect(ValueError, lambda: load_image(f"{base}/page.html"), "text/html", "not an image")


def test_http_download_size_cap(http_root, chelsea, monkeypatch):
    folder, base = http_root
    Image.fromarray(chelsea).save(folder / "cat.png")
    monkeypatch.setattr(loading, "MAX_DOWNLOAD_BYTES", 1000)
    expect(ValueError, lambda: load_image(f"{base}/cat.png"), "download limit",
           "MAX_DOWNLOAD_BYTES")


@pytest.mark.timeout(30)
def test_unreachable_url_fails_with_connection_error():
    url = f"http://127.0.0.1:{closed_port()}/x.png"
    err = expect(ConnectionError, lambda: load_image(url, argname="photo"), url, argname="photo")
    assert "download the image" in str(err)
    assert err.__cause__ is not None


@pytest.mark.timeout(30)
def test_silent_server_times_out(monkeypatch):
    monkeypatch.setattr(loading, "URL_TIMEOUT_S", 0.5)
    with socket.socket() as listener:  # accepts the connection (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x.png"
        expect(ConnectionError, lambda: load_image(url), url, "0.5 s")


# ---------------------------------------------------------------------------- PIL modes


def test_pil_rgb_is_copied():
    img = Image.new("RGB", (10, 12), (1, 2, 3))
    out = load_image(img)
    assert out is not img and out.size == (10, 12)
    assert out.getpixel((0, 0)) == (1, 2, 3)


@pytest.mark.parametrize(
    "img, expected",
    [
        (Image.new("L", (9, 9), 77), (77, 77, 77)),
        (Image.new("1", (9, 9), 1), (255, 255, 255)),
        (Image.new("RGBA", (9, 9), (255, 0, 0, 255)), (255, 0, 0)),
        (Image.new("RGBA", (9, 9), (255, 0, 0, 0)), (255, 255, 255)),  # transparent -> white
        (Image.new("LA", (9, 9), (0, 0)), (255, 255, 255)),
        (Image.new("CMYK", (9, 9), (0, 255, 255, 0)), (255, 0, 0)),
        (Image.new("F", (9, 9), 0.5), (128, 128, 128)),
        (Image.new("YCbCr", (9, 9), (255, 128, 128)), (255, 255, 255)),
    ],
    ids=["L", "1", "RGBA-opaque", "RGBA-clear", "LA", "CMYK", "F", "YCbCr"],
)
def test_pil_modes_become_rgb(img, expected):
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (9, 9)
    assert out.getpixel((4, 4)) == expected


def test_rgba_half_alpha_composited_over_white():
    out = load_image(Image.new("RGBA", (4, 4), (0, 0, 0, 128)))
    assert all(abs(v - 127) <= 1 for v in out.getpixel((0, 0)))


def test_palette_with_and_without_transparency():
    img = Image.new("P", (6, 6), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert load_image(img).getpixel((3, 3)) == (10, 200, 30)
    img.info["transparency"] = 1
    assert load_image(img).getpixel((3, 3)) == (255, 255, 255)


# ---------------------------------------------------------------------------- arrays


@pytest.mark.parametrize(
    "arr, expected",
    [
        (np.full((5, 7), 9, np.uint8), (9, 9, 9)),
        (np.full((5, 7, 1), 9, np.uint8), (9, 9, 9)),
        (np.tile(np.array([1, 2, 3], np.uint8), (5, 7, 1)), (1, 2, 3)),
        (np.tile(np.array([1, 2, 3, 255], np.uint8), (5, 7, 1)), (1, 2, 3)),
        (np.tile(np.array([1, 2, 3, 0], np.uint8), (5, 7, 1)), (255, 255, 255)),
        (np.ones((5, 7), bool), (255, 255, 255)),
        (np.full((5, 7, 3), 0.5, np.float32), (128, 128, 128)),
        (np.full((5, 7), 1.0, np.float64), (255, 255, 255)),
        (np.full((5, 7, 3), 0.25, np.float16), (64, 64, 64)),
        (np.full((5, 7, 3), 65535, np.uint16), (255, 255, 255)),
        (np.full((5, 7, 3), 200, np.int64), (200, 200, 200)),
    ],
    ids=["HW", "HW1", "HW3", "HW4-opaque", "HW4-clear", "bool", "f32", "f64-gray", "f16",
         "uint16", "int64"],
)
def test_arrays(arr, expected):
    out = load_image(arr)
    assert out.mode == "RGB" and out.size == (7, 5)
    assert out.getpixel((3, 2)) == expected


def test_non_contiguous_array(chelsea):
    flipped = chelsea[:, ::-1]
    np.testing.assert_array_equal(rgb_array(load_image(flipped)), flipped)


# ---------------------------------------------------------------------------- tensors


def test_model_input_tensor_kept_exactly():
    x = torch.randn(3, 32, 40)
    out = load_image(x)
    assert out.shape == (1, 3, 32, 40) and out.dtype == torch.float32 and out.is_contiguous()
    assert torch.equal(out[0], x)
    out.zero_()
    assert x.abs().sum() > 0  # a copy, not a view of the user's tensor


def test_model_input_tensor_other_dtypes_and_grad():
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    out = load_image(x)
    assert out.dtype == torch.float32 and not out.requires_grad
    torch.testing.assert_close(out, x.detach().float())
    assert load_image(x.detach().half()).dtype == torch.float32


def test_image_tensors_read_like_arrays(chelsea):
    chw = torch.from_numpy(chelsea).permute(2, 0, 1).contiguous()  # like io.read_image
    for given in (chw, chw[None], torch.from_numpy(chelsea)):
        np.testing.assert_array_equal(rgb_array(load_image(given)), chelsea)
    gray = load_image(torch.full((6, 8), 0.5))
    assert gray.size == (8, 6) and gray.getpixel((0, 0)) == (128, 128, 128)
    hwc = load_image(torch.full((6, 8, 3), 1.0))
    assert hwc.getpixel((0, 0)) == (255, 255, 255)


# ---------------------------------------------------------------------------- refusals


def test_none():
    expect(TypeError, lambda: load_image(None), "None", "file path")


@pytest.mark.parametrize("value", [3, {"a": 1}, [[0, 1], [1, 0]], 2.5])
def test_unsupported_types(value):
    err = expect(TypeError, lambda: load_image(value, argname="picture"), type(value).__name__,
                 "numpy array", argname="picture")
    if isinstance(value, list):
        assert "np.asarray" in str(err)


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.png"
    expect(FileNotFoundError, lambda: load_image(missing), str(missing), "Check the spelling")
    expect(FileNotFoundError, lambda: load_image("no/such/cat.jpg"), "working directory")


def test_directory(tmp_path):
    expect(IsADirectoryError, lambda: load_image(tmp_path), "directory", "one image file")


def test_file_that_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are notes, not pixels")
    err = expect(ValueError, lambda: load_image(path), str(path), "not an image", "PNG")
    assert err.__cause__ is not None


def test_empty_file_and_empty_inputs(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    expect(ValueError, lambda: load_image(path), "empty", "0 bytes")
    expect(ValueError, lambda: load_image(b""), "empty")
    expect(ValueError, lambda: load_image("  "), "empty string", "path")
    expect(ValueError, lambda: load_image(np.zeros((0, 4, 3), np.uint8)), "empty")


def test_garbage_and_truncated_bytes(chelsea):
    expect(ValueError, lambda: load_image(b"\x00\x01garbage" * 10), "not an image", "PNG")
    truncated = png_bytes(Image.fromarray(chelsea))[:2000]
    err = expect(ValueError, lambda: load_image(truncated), "truncated")
    assert err.__cause__ is not None


@pytest.mark.parametrize("size", [(40000, 40000), (10000, 10000), (9000, 9000)],
                         ids=["pil-error", "pil-warning", "header-cap"])
def test_decompression_bomb(tmp_path, size):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(*size))
    assert path.stat().st_size < 200
    expect(ValueError, lambda: load_image(path), "decompression bomb", "megapixels")


def test_pixel_cap_on_arrays(monkeypatch):
    monkeypatch.setattr(loading, "MAX_PIXELS", 100)
    expect(ValueError, lambda: load_image(np.zeros((20, 20), np.uint8)), "MAX_PIXELS")


def test_unsupported_url_scheme():
    expect(ValueError, lambda: load_image("ftp://example.com/cat.png"), "ftp", "path")


def test_text_mode_file_object():
    expect(TypeError, lambda: load_image(io.StringIO("abc")), "'rb'")


@pytest.mark.parametrize(
    "arr, error, words",
    [
        (np.zeros(64, np.uint8), ValueError, ("1-D", "reshape")),
        (np.zeros((1, 1, 8, 8, 3), np.uint8), ValueError, ("5-D", "arr[0]")),
        (np.zeros((2, 8, 8, 3), np.uint8), ValueError, ("4-D", "arr[0]")),
        (np.zeros((8, 8, 7), np.uint8), ValueError, ("7 channels", "arr[..., :3]")),
        (np.zeros((3, 16, 16), np.float32), ValueError, ("channels-first", "transpose(1, 2, 0)")),
        (np.full((8, 8), "a"), TypeError, ("dtype <U1", "np.asarray")),
        (np.zeros((8, 8), object), TypeError, ("dtype object", "float32")),
        (np.zeros((8, 8), complex), TypeError, ("complex128",)),
        (np.full((8, 8), np.nan, np.float32), ValueError, ("NaN or Inf", "nan_to_num")),
        (np.full((8, 8), np.inf), ValueError, ("NaN or Inf", "nan_to_num")),
        (np.full((8, 8, 3), 200.0), ValueError, ("[0, 1]", "divide by 255")),
        (np.full((8, 8, 3), -3.0), ValueError, ("[0, 1]", "rescale")),
        (np.full((8, 8), 300, np.int32), ValueError, ("0..255", "Rescale")),
    ],
    ids=["1d", "5d", "4d", "7ch", "chw", "str", "object", "complex", "nan", "inf", "over1",
         "negative", "int-range"],
)
def test_array_refusals(arr, error, words):
    err = expect(error, lambda: load_image(arr, argname="image"), *words, argname="image")
    assert "image" in str(err)


@pytest.mark.parametrize(
    "tensor, words",
    [
        (torch.zeros(4, 32, 32), ("4 channels", "needs 3")),
        (torch.zeros(1, 1, 32, 32), ("1 channels", "repeat")),
        (torch.zeros(1, 32, 32), ("1 channels", "expand")),
        (torch.zeros(2, 3, 32, 32), ("batch of 2", "img[:1]")),
        (torch.zeros(3, 4, 4), ("4 x 4", "at least 8", "interpolate")),
        (torch.zeros(1, 3, 224, 5), ("224 x 5", "interpolate")),
        (torch.full((3, 16, 16), float("nan")), ("NaN or Inf", "nan_to_num")),
        (torch.zeros(1, 1, 3, 8, 8), ("5-D", "(1, 3, H, W)")),
        (torch.zeros(64), ("1-D", "(3, H, W)")),
        (torch.full((8, 8, 3), 2.0), ("[0, 1]", "divide by 255")),
    ],
    ids=["4chw", "11hw", "1hw", "batch", "tiny", "thin", "nan", "5d", "1d", "hwc-range"],
)
def test_tensor_refusals(tensor, words):
    expect(ValueError, lambda: load_image(tensor), *words)


def test_complex_tensor():
    expect(TypeError, lambda: load_image(torch.zeros(3, 8, 8, dtype=torch.complex64)), "complex")


# ---------------------------------------------------------------------------- preprocessing


def test_imagenet_transform_matches_torchvision(chelsea):
    pil = Image.fromarray(chelsea)
    ours = imagenet_transform()(pil)
    theirs = ResNet18_Weights.IMAGENET1K_V1.transforms()(pil)
    assert ours.shape == (3, 224, 224) and ours.dtype == torch.float32
    assert torch.equal(ours, theirs)


def resized_and_cropped(chelsea: np.ndarray, crop: int, warp: bool = False) -> np.ndarray:
    """Shorter side (or, with warp, both sides) to 256 with PIL bilinear, then the centre crop."""
    height, width = chelsea.shape[:2]
    new_w, new_h = (256, 256) if warp else (int(256 * width / height), 256)
    resized = np.asarray(Image.fromarray(chelsea).resize((new_w, new_h), Image.BILINEAR))
    top, left = round((new_h - crop) / 2), round((new_w - crop) / 2)
    return resized[top:top + crop, left:left + crop]


def test_caffe_transform_exact(chelsea):
    x = caffe_transform()(Image.fromarray(chelsea))
    crop = resized_and_cropped(chelsea, 227, warp=True)
    by_hand = crop[:, :, ::-1].astype(np.float32) - np.array([104, 117, 123], np.float32)
    assert x.shape == (3, 227, 227)
    assert torch.equal(x, torch.from_numpy(by_hand.transpose(2, 0, 1).copy()))
    np.testing.assert_array_equal(caffe_transform().to_display(x), crop)  # exact inverse


def test_imagenet_to_display_round_trip(chelsea):
    pre = imagenet_transform()
    x = pre(Image.fromarray(chelsea))
    np.testing.assert_array_equal(pre.to_display(x), resized_and_cropped(chelsea, 224))
    np.testing.assert_array_equal(pre.to_display(x[None]), pre.to_display(x))


def test_from_torchvision(chelsea):
    t = ResNet18_Weights.IMAGENET1K_V1.transforms()
    pre = from_torchvision(t)
    pil = Image.fromarray(chelsea)
    assert (pre.resize, pre.crop) == (256, 224)
    assert torch.equal(pre(pil), t(pil))
    np.testing.assert_array_equal(pre.to_display(pre(pil)), resized_and_cropped(chelsea, 224))
    assert from_torchvision(ResNet18_Weights.IMAGENET1K_V1).crop == 224  # a weights enum
    assert from_torchvision(pre) is pre
    expect(TypeError, lambda: from_torchvision(lambda im: im), "mean", "transforms()",
           argname="weights_transforms")


def test_preprocess_argument_checks():
    expect(ValueError, lambda: Preprocess(crop=0), "positive", argname="crop")
    expect(ValueError, lambda: Preprocess(std=(1, 0, 1)), "positive", argname="std")
    expect(ValueError, lambda: Preprocess(mean=(1, 2)), "three", argname="mean")
    expect(ValueError, lambda: imagenet_transform().to_display(torch.zeros(4, 8, 8)),
           "(3, H, W)", argname="x")
    assert "caffe" in repr(caffe_transform())


def test_caffe_transform_gives_the_readme_prediction(chelsea):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.squeezenet1_0(weights=None)
    state = torch.load(SQUEEZENET, weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.eval()
    x, _ = prepare_input(chelsea, caffe_transform())
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)[0]
    categories = SqueezeNet1_0_Weights.IMAGENET1K_V1.meta["categories"]
    top = probs.topk(5)
    assert [categories[int(i)] for i in top.indices[:4]] == [
        "Egyptian cat", "tiger cat", "tabby", "lynx"]  # the README's check
    assert abs(float(top.values[0]) - 0.81) < 0.02


# ---------------------------------------------------------------------------- prepare_input


def test_prepare_input_default(chelsea):
    x, display = prepare_input(chelsea)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32 and x.is_contiguous()
    assert x.device.type == "cpu"
    assert display.shape == (224, 224, 3) and display.dtype == np.uint8
    np.testing.assert_array_equal(display, resized_and_cropped(chelsea, 224))


def test_prepare_input_caffe_and_raw_torchvision_transform(chelsea):
    x, display = prepare_input(Image.fromarray(chelsea), caffe_transform())
    assert x.shape == (1, 3, 227, 227)
    np.testing.assert_array_equal(display, resized_and_cropped(chelsea, 227, warp=True))
    x, display = prepare_input(chelsea, ResNet18_Weights.IMAGENET1K_V1.transforms())
    np.testing.assert_array_equal(display, resized_and_cropped(chelsea, 224))  # inverted


def test_prepare_input_model_tensor_skips_transform(chelsea):
    given = imagenet_transform()(Image.fromarray(chelsea))
    x, display = prepare_input(given, caffe_transform())  # transform must not be applied
    assert torch.equal(x[0], given)
    x, display = prepare_input(given)  # default ImageNet inverse fits: exact picture
    np.testing.assert_array_equal(display, resized_and_cropped(chelsea, 224))


def test_prepare_input_tensor_display_falls_back_to_minmax():
    given = torch.linspace(-40, 40, 3 * 16 * 20).reshape(1, 3, 16, 20)
    x, display = prepare_input(given)  # far outside what the ImageNet inverse maps to 0..255
    assert torch.equal(x, given)
    expected = np.rint((given[0].numpy().transpose(1, 2, 0) + 40) / 80 * 255)
    np.testing.assert_array_equal(display, expected.astype(np.uint8))


def test_prepare_input_user_transform_min_max_display():
    def to_tensor(img):
        return torch.from_numpy(np.asarray(img, np.float32).transpose(2, 0, 1).copy()) * 2 - 100

    pixels = np.zeros((12, 10, 3), np.uint8)
    pixels[:, :, 0] = np.arange(10) * 20
    x, display = prepare_input(pixels, to_tensor)
    assert x.shape == (1, 3, 12, 10)
    assert display.shape == (12, 10, 3) and display.min() == 0 and display.max() == 255
    np.testing.assert_array_equal(display[..., 1], 0)  # scaled as a whole, not per channel


@pytest.mark.parametrize(
    "returns, error, words",
    [
        (lambda img: np.zeros((3, 32, 32), np.float32), TypeError, ("numpy array", "from_numpy")),
        (lambda img: torch.zeros(3, 32, 32, dtype=torch.uint8), TypeError, ("uint8", "ToDtype")),
        (lambda img: torch.zeros(32, 32, 3), ValueError, ("(32, 32, 3)", "permute")),
        (lambda img: torch.zeros(2, 3, 32, 32), ValueError, ("(2, 3, 32, 32)",)),
        (lambda img: torch.zeros(3, 4, 4), ValueError, ("4 x 4", "Resize")),
        (lambda img: torch.full((3, 32, 32), float("inf")), ValueError, ("NaN or Inf",)),
        (lambda img: "a string", TypeError, ("str",)),
    ],
    ids=["ndarray", "uint8", "hwc", "batch", "tiny", "inf", "str"],
)
def test_prepare_input_user_transform_bad_output(returns, error, words):
    expect(error, lambda: prepare_input(np.zeros((32, 32, 3), np.uint8), returns), *words,
           argname="transform")


def test_prepare_input_transform_that_raises_or_is_not_callable():
    def broken(img):
        raise KeyError("boom")

    err = expect(ValueError, lambda: prepare_input(np.zeros((32, 32, 3), np.uint8), broken),
                 "KeyError", argname="transform")
    assert isinstance(err.__cause__, KeyError)
    expect(TypeError, lambda: prepare_input(np.zeros((32, 32, 3), np.uint8), 5), "callable",
           argname="transform")


def test_prepare_input_reports_the_argname():
    expect(TypeError, lambda: prepare_input(None, argname="image"), "None", argname="image")


@pytest.mark.parametrize("transform", [None, "caffe", "torchvision", "callable"])
def test_model_input_and_display_image_match_prepare_input(chelsea, transform):
    transform = {
        None: None,
        "caffe": caffe_transform(),
        "torchvision": ResNet18_Weights.IMAGENET1K_V1.transforms(),
        "callable": lambda img: torch.from_numpy(np.asarray(img, np.float32).transpose(2, 0, 1).copy()),
    }[transform]
    x, display = prepare_input(chelsea, transform)
    alone = model_input(chelsea, transform)
    assert torch.equal(x, alone)
    np.testing.assert_array_equal(display, display_image(alone, transform))
