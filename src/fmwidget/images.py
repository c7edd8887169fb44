"""Image input: every kind of image a user may hand us, turned into the model's input.

``load_image`` accepts a path, an http(s) URL, a PIL image, a numpy array, encoded bytes or a
torch tensor and returns an RGB ``PIL.Image`` (or, for a tensor that already is a model input,
that tensor). A ``Preprocess`` turns the RGB image into a ``(3, H, W)`` float32 tensor and back
into the ``(H, W, 3)`` uint8 picture the model saw (resized, cropped), used for overlays.
``prepare_input`` does both steps and returns ``(x, display)``; ``prepare_input_lazy`` computes
``display`` only when asked.

Every refusal is a ``TypeError``, ``ValueError`` or ``OSError`` subclass (``FileNotFoundError``,
``IsADirectoryError``, ``ConnectionError``) whose message names the argument, what was wrong
and how to fix it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import http.client
import io
import os
import pathlib
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

__all__ = [
    "Preprocess",
    "caffe_transform",
    "from_torchvision",
    "imagenet_transform",
    "load_image",
    "prepare_input",
    "prepare_input_lazy",
]

URL_TIMEOUT_S = 10.0
"""Seconds to wait for an image URL (to connect, and for the whole download)."""
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
"""Largest image download (or data URL) accepted, in bytes."""
MAX_PIXELS = 64_000_000
"""Largest encoded image decoded, in pixels (checked from the header, before decoding)."""
MIN_SIDE = 8
"""Smallest height or width of a model-input tensor."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)

_KINDS = (
    "a file path, an http(s) URL, a PIL image, a numpy array of shape (H, W), (H, W, 1), "
    "(H, W, 3) or (H, W, 4), the bytes of an encoded image, or a torch tensor"
)
_DISPLAY_TOLERANCE = 2.0  # pixel levels an inverse may overshoot 0..255 and still count as valid


# --------------------------------------------------------------------------------------------
# load_image
# --------------------------------------------------------------------------------------------


def load_image(img: Any, *, argname: str = "img") -> Image.Image | torch.Tensor:
    """Load any supported image input as an RGB ``PIL.Image``, or a model-input tensor.

    Parameters
    ----------
    img : str, os.PathLike, bytes, PIL.Image.Image, numpy.ndarray or torch.Tensor
        - a file path (``str`` or ``pathlib.Path``; ``~`` is expanded), or a ``file://`` URL;
        - an ``http://`` / ``https://`` URL, downloaded with a timeout of ``URL_TIMEOUT_S``
          seconds and at most ``MAX_DOWNLOAD_BYTES`` bytes; a ``data:`` URL;
        - a ``PIL.Image`` in any mode, or the bytes (or a binary file object) of an encoded image;
        - a numpy array (or anything with ``__array__``) of shape ``(H, W)``, ``(H, W, 1)``,
          ``(H, W, 3)`` or ``(H, W, 4)`` holding uint8 0..255, uint16 0..65535, other integers
          in 0..255, bool, or floats in [0, 1];
        - a torch tensor. A float ``(3, H, W)`` or ``(1, 3, H, W)`` tensor is taken as a model
          input, already preprocessed, and returned as a tensor. Other tensors (``(H, W)``,
          ``(H, W, 3)``, uint8 ``(3, H, W)`` as from ``torchvision.io.read_image``) are read
          like arrays.
    argname : str, optional
        The name used for ``img`` in error messages.

    Returns
    -------
    PIL.Image.Image or torch.Tensor
        An RGB image (a new object), or, for a model-input tensor, a ``(1, 3, H, W)`` float32
        contiguous CPU copy of it with the values unchanged.

    Notes
    -----
    Grayscale, palette, CMYK, 16-bit and float images are converted to RGB (16-bit values are
    scaled by 255/65535). Transparent images (RGBA, LA, palette with transparency, and
    ``(H, W, 4)`` arrays) are composited over a **white** background. The EXIF orientation of
    photos is applied. Encoded images larger than ``MAX_PIXELS`` are refused from their header,
    before decoding (a guard against decompression bombs).

    Raises
    ------
    TypeError
        For ``None``, an unsupported type, or an array of non-numbers.
    ValueError
        For a file that is not an image, empty data, a too large image, a bad shape, channel
        count or value range, NaN/Inf, or a URL the server refused.
    FileNotFoundError, IsADirectoryError, ConnectionError
        For a missing path, a directory, or a URL that cannot be reached in time.

    Examples
    --------
    >>> import numpy as np
    >>> load_image(np.zeros((32, 48), np.uint8)).size       # grayscale -> RGB
    (48, 32)
    >>> load_image(torch.zeros(3, 224, 224)).shape           # model input, kept as a tensor
    torch.Size([1, 3, 224, 224])
    """
    if img is None:
        raise TypeError(f"{argname} is None: pass {_KINDS}.")
    if isinstance(img, torch.Tensor):
        return _from_tensor(img, argname)
    if isinstance(img, Image.Image):
        return _from_pil(img, argname, "the PIL image")
    if isinstance(img, np.ndarray):
        return _from_array(img, argname, "array")
    if isinstance(img, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(img), argname, "the bytes")
    if isinstance(img, str):
        return _from_string(img, argname)
    if isinstance(img, os.PathLike):
        return _from_path(pathlib.Path(os.fspath(img)), argname)
    if callable(getattr(img, "read", None)):
        return _from_file_object(img, argname)
    if hasattr(img, "__array__") and not isinstance(img, (list, tuple, dict, set)):
        try:
            arr = np.asarray(img)
        except Exception as err:  # any array-like may fail its own way
            raise TypeError(
                f"{argname} ({type(img).__name__}) could not be converted to a numpy array "
                f"({err}); pass a numpy array, PIL image or tensor instead."
            ) from err
        return _from_array(arr, argname, "array")
    hint = ""
    if isinstance(img, (list, tuple)):
        hint = " For nested lists of pixel values, wrap them: np.asarray(..., dtype=np.uint8)."
    raise TypeError(
        f"{argname} has unsupported type {type(img).__module__}.{type(img).__qualname__}; "
        f"pass {_KINDS}.{hint}"
    )


def _from_string(text: str, argname: str) -> Image.Image:
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"{argname} is an empty string: pass the path or http(s) URL of an image.")
    scheme = urllib.parse.urlsplit(stripped).scheme.lower() if "://" in stripped[:16] else ""
    if stripped[:5].lower() == "data:":
        return _from_bytes(_decode_data_url(stripped, argname), argname, "the data URL")
    if scheme in ("http", "https"):
        data, content_type = _download(stripped, argname)
        hint = "" if content_type.startswith("image/") else f" (the server sent {content_type})"
        return _from_bytes(data, argname, f"the download from {stripped}", hint=hint)
    if scheme == "file":
        path = urllib.request.url2pathname(urllib.parse.urlsplit(stripped).path)
        return _from_path(pathlib.Path(path), argname)
    if len(scheme) > 1:
        raise ValueError(
            f"{argname}={stripped!r} uses the unsupported URL scheme {scheme!r}: only http(s), "
            "file and data URLs are read. Download the image and pass its path."
        )
    return _from_path(pathlib.Path(text).expanduser(), argname)


def _from_path(path: pathlib.Path, argname: str) -> Image.Image:
    try:
        exists = path.exists()
        is_dir = exists and path.is_dir()
        size = path.stat().st_size if exists and not is_dir else None
    except (OSError, ValueError) as err:  # name too long, NUL byte, ...
        raise ValueError(
            f"{argname}={str(path)[:200]!r} is not a usable file path ({err}); pass the path of "
            "an image file, or an http(s) URL."
        ) from err
    if not exists:
        where = "" if path.is_absolute() else f" (relative to the working directory {os.getcwd()})"
        raise FileNotFoundError(
            f"{argname}: no file at {str(path)!r}{where}. Check the spelling and location, or pass "
            "an absolute path, an http(s) URL, a PIL image or an array."
        )
    if is_dir:
        raise IsADirectoryError(
            f"{argname}: {str(path)!r} is a directory, not an image file; pass the path of one "
            "image file inside it."
        )
    if size == 0:
        raise ValueError(
            f"{argname}: the file {str(path)!r} is empty (0 bytes); pass a PNG, JPEG or other "
            "image file that has content (was it still downloading?)."
        )
    try:
        handle = open(path, "rb")  # noqa: SIM115 - only open() errors are explained here
    except OSError as err:
        raise type(err)(
            f"{argname}: cannot open {str(path)!r} ({err.strerror or err}); check its permissions."
        ) from err
    with handle:
        return _decode(handle, argname, f"the file {str(path)!r}")


def _from_file_object(fileobj: Any, argname: str) -> Image.Image:
    try:
        data = fileobj.read(MAX_DOWNLOAD_BYTES + 1)
    except Exception as err:  # a file object may fail in its own way
        raise ValueError(
            f"{argname}: reading the file object failed ({err}); open it in binary mode ('rb') "
            "or pass its path."
        ) from err
    if isinstance(data, str):
        raise TypeError(
            f"{argname} is a text-mode file object; open the image in binary mode: "
            "open(path, 'rb')."
        )
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise ValueError(
            f"{argname}: the file object holds more than {MAX_DOWNLOAD_BYTES} bytes; pass its "
            "path instead."
        )
    return _from_bytes(bytes(data), argname, "the file object")


def _from_bytes(data: bytes, argname: str, source: str, hint: str = "") -> Image.Image:
    if not data:
        raise ValueError(
            f"{argname}: {source} are empty (0 bytes); pass the bytes of a PNG or JPEG."
        )
    return _decode(io.BytesIO(data), argname, source, hint=hint)


@contextlib.contextmanager
def _pil_errors(argname: str, source: str, hint: str = ""):
    """Turn PIL's decoding errors and warnings into messages naming the argument and a fix."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(
            f"{argname}: {source} claims an enormous image ({err}); refusing to decode it, since "
            f"it may be a decompression bomb. Resize it to under {MAX_PIXELS // 1_000_000} "
            "megapixels first."
        ) from err
    except UnidentifiedImageError as err:
        raise ValueError(
            f"{argname}: {source} is not an image PIL can read{hint}. Pass a PNG, JPEG, GIF, "
            "BMP, TIFF or WebP image (or a numpy array / PIL image)."
        ) from err
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError) as err:
        # PIL reports truncated and corrupt files with all of these.
        raise ValueError(
            f"{argname}: {source} could not be decoded ({type(err).__name__}: {err}); the file "
            "is probably truncated or corrupt. Re-download or re-save it."
        ) from err


def _decode(fileobj: Any, argname: str, source: str, hint: str = "") -> Image.Image:
    with _pil_errors(argname, source, hint):
        opened = Image.open(fileobj)
    with opened:
        _check_pixels(opened.size, argname, source)
        with _pil_errors(argname, source, hint):
            opened.load()
        return _from_pil(opened, argname, source)


def _check_pixels(size: tuple[int, int], argname: str, source: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ValueError(
            f"{argname}: {source} has no pixels ({width} x {height}); pass a real image."
        )
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"{argname}: {source} is {width} x {height} pixels ({width * height / 1e6:.0f} "
            f"megapixels), more than the limit of {MAX_PIXELS // 1_000_000} megapixels that guards "
            "against decompression bombs. Resize it first, or raise "
            "fmwidget.images.MAX_PIXELS if you trust it."
        )


def _from_pil(img: Image.Image, argname: str, source: str) -> Image.Image:
    _check_pixels(img.size, argname, source)
    with _pil_errors(argname, source):
        img = ImageOps.exif_transpose(img)  # always a new, loaded image
    return _pil_to_rgb(img, argname, source)


def _pil_to_rgb(img: Image.Image, argname: str, source: str) -> Image.Image:
    mode = img.mode
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info
    if mode.startswith("I") or mode == "F":
        # 16/32-bit integer and float modes: Image.convert would clip at 255, so scale instead.
        gray = _scale_wide_gray(np.asarray(img), mode, argname, source)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
    if has_alpha:
        return _over_white(img.convert("RGBA"))
    if mode == "RGB":
        return img
    return img.convert("RGB")


def _scale_wide_gray(arr: np.ndarray, mode: str, argname: str, source: str) -> np.ndarray:
    values = arr.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(
            f"{argname}: {source} (mode {mode}) contains NaN or Inf pixels; clean it, e.g. with "
            "np.nan_to_num, and pass the array."
        )
    low, high = float(values.min()), float(values.max())
    if mode.startswith("I;16") or (low >= 0 and 255 < high <= 65535 and mode == "I"):
        values = values * (255.0 / 65535.0)
    elif mode == "F" and low >= 0 and high <= 1:
        values = values * 255.0
    elif low < 0 or high > 255:
        values = (values - low) * (255.0 / max(high - low, 1e-12))
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _over_white(rgba: Image.Image) -> Image.Image:
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _from_array(arr: np.ndarray, argname: str, kind: str) -> Image.Image:
    if arr.dtype.kind not in "buif":
        raise TypeError(
            f"{argname} is a numpy {kind} of dtype {arr.dtype}; an image {kind} must hold numbers "
            "(uint8 0..255, floats in [0, 1], or bool). Convert it, e.g. "
            "np.asarray(arr, dtype=np.float32) / 255, or pass a file path."
        )
    shape = tuple(arr.shape)
    if arr.ndim == 3 and shape[2] not in (1, 3, 4):
        if shape[0] in (1, 3, 4):
            fix = "arr.transpose(1, 2, 0)" if kind == "array" else "t.permute(1, 2, 0)"
            raise ValueError(
                f"{argname} has shape {shape}, which looks channels-first (C, H, W); images are "
                f"read as (H, W, C). Move the channels last: {fix}."
            )
        raise ValueError(
            f"{argname} has {shape[2]} channels (shape {shape}); an image needs 1 (gray), "
            "3 (RGB) or 4 (RGBA) channels in the last axis. Keep three, e.g. arr[..., :3]."
        )
    if arr.ndim not in (2, 3):
        fix = {
            0: "pass a whole image, not a single value",
            1: "reshape it to (H, W) or (H, W, 3), e.g. arr.reshape(height, width)",
        }.get(arr.ndim, "pass one image of a batch, e.g. arr[0], or squeeze size-1 axes")
        raise ValueError(
            f"{argname} is a {arr.ndim}-D {kind} of shape {shape}; an image must be (H, W), "
            f"(H, W, 1), (H, W, 3) or (H, W, 4): {fix}."
        )
    if arr.size == 0:
        raise ValueError(
            f"{argname} is an empty {kind} (shape {shape}); pass an image with pixels."
        )
    _check_pixels((shape[1], shape[0]), argname, f"the {kind}")
    pixels = _array_to_uint8(arr, argname, kind)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    image = Image.fromarray(np.ascontiguousarray(pixels))
    return _over_white(image) if pixels.shape[2] == 4 else image


def _array_to_uint8(arr: np.ndarray, argname: str, kind: str) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:  # a 16-bit image: full range 0..65535
        return np.rint(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    if arr.dtype.kind in "iu":
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"{argname} is an integer {kind} with values from {low} to {high}; integer images "
                "must lie in 0..255 (or be uint16). Rescale it, e.g. "
                "((arr - arr.min()) * 255 // (arr.max() - arr.min())).astype(np.uint8)."
            )
        return arr.astype(np.uint8)
    values = arr.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(values.size - np.count_nonzero(finite))
        raise ValueError(
            f"{argname} contains NaN or Inf ({bad} of {values.size} values); replace them, e.g. "
            "np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)."
        )
    low, high = float(values.min()), float(values.max())
    if low < -1e-6 or high > 1 + 1e-6:
        if low >= 0 and high <= 255:
            fix = (
                "they look like 0..255 values: divide by 255 (arr / 255) or use "
                "arr.astype(np.uint8)"
            )
        else:
            fix = "rescale it, e.g. (arr - arr.min()) / (arr.max() - arr.min())"
        raise ValueError(
            f"{argname} is a float {kind} with values from {low:.4g} to {high:.4g}; float images "
            f"must lie in [0, 1]: {fix}."
        )
    return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def _from_tensor(tensor: torch.Tensor, argname: str) -> Image.Image | torch.Tensor:
    if tensor.is_complex() or tensor.dtype in (torch.uint16, torch.uint32, torch.uint64):
        raise TypeError(
            f"{argname} is a tensor of dtype {tensor.dtype}; pass a float (model input or [0, 1] "
            "image), uint8 or bool tensor, e.g. t.float()."
        )
    try:
        tensor = tensor.detach().to("cpu").as_subclass(torch.Tensor)
    except (RuntimeError, NotImplementedError) as err:
        raise ValueError(
            f"{argname}: the tensor could not be copied to the CPU ({err}); pass a materialised "
            "tensor, e.g. t.cpu()."
        ) from err
    shape = tuple(tensor.shape)
    if tensor.is_floating_point():
        if tensor.ndim == 4 or (tensor.ndim == 3 and (shape[0] == 3 or shape[2] not in (1, 3, 4))):
            return _model_tensor(tensor, argname)
        if tensor.ndim not in (2, 3):
            raise ValueError(
                f"{argname} is a {tensor.ndim}-D tensor of shape {shape}; pass a model input "
                "(3, H, W) or (1, 3, H, W), or an image (H, W) or (H, W, 3) with values in [0, 1]."
            )
        return _from_array(tensor.to(torch.float32).numpy(), argname, "tensor")
    if tensor.ndim == 4 and shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim == 3 and tensor.shape[0] in (1, 3, 4) and tensor.shape[2] not in (1, 3, 4):
        tensor = tensor.permute(1, 2, 0)  # (C, H, W) as torchvision.io.read_image returns
    return _from_array(tensor.numpy(), argname, "tensor")


def _model_tensor(tensor: torch.Tensor, argname: str) -> torch.Tensor:
    shape = tuple(tensor.shape)
    if tensor.ndim == 4 and shape[0] != 1:
        raise ValueError(
            f"{argname} is a batch of {shape[0]} images (shape {shape}); pass one, e.g. "
            f"{argname}[:1]."
        )
    channels = shape[-3]
    if channels != 3:
        raise ValueError(
            f"{argname} is a tensor of shape {shape} with {channels} channels; a model input "
            "needs 3 (RGB): (3, H, W) or (1, 3, H, W). For gray repeat the channel, e.g. "
            "x.expand(-1, 3, -1, -1) or x.repeat(3, 1, 1); for RGBA keep x[..., :3, :, :]; an "
            "image tensor (H, W, 3) with values in [0, 1] is read as a picture."
        )
    height, width = shape[-2:]
    if min(height, width) < MIN_SIDE:
        raise ValueError(
            f"{argname} is only {height} x {width} pixels; a CNN needs at least {MIN_SIDE} x "
            f"{MIN_SIDE} (most expect about 224 x 224, and the capture stage refuses inputs its "
            "layers shrink to nothing). Resize it, e.g. torch.nn.functional.interpolate(x, "
            "size=(224, 224), mode='bilinear')."
        )
    x = tensor.reshape(1, 3, height, width).to(torch.float32).clone().contiguous()
    if not torch.isfinite(x).all():
        raise ValueError(
            f"{argname} contains NaN or Inf values; clean it first, e.g. torch.nan_to_num(x)."
        )
    return x


def _decode_data_url(url: str, argname: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise ValueError(
            f"{argname} is a data URL without a ',' before its data; pass "
            "'data:image/png;base64,<data>'."
        )
    if len(payload) > MAX_DOWNLOAD_BYTES * 4 // 3 + 4:
        raise ValueError(
            f"{argname}: the data URL is over {MAX_DOWNLOAD_BYTES} bytes; save it to a file."
        )
    try:
        if header.lower().endswith(";base64"):
            return base64.b64decode(payload, validate=False)
        return urllib.parse.unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as err:
        raise ValueError(
            f"{argname}: the data URL's base64 payload is invalid ({err}); re-encode the image."
        ) from err


def _opener_for(url: str) -> urllib.request.OpenerDirector:
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.startswith("127.") or host == "::1":
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never proxy loopback
    return urllib.request.build_opener()


def _download(url: str, argname: str) -> tuple[bytes, str]:
    """Fetch ``url`` within ``URL_TIMEOUT_S`` and ``MAX_DOWNLOAD_BYTES``; return (data, type)."""
    timeout, limit = float(URL_TIMEOUT_S), int(MAX_DOWNLOAD_BYTES)
    fix = "Check the address and your connection, or download the image and pass its path."
    try:
        headers = {"User-Agent": "fmwidget", "Accept": "image/*"}
        request = urllib.request.Request(url, headers=headers)
    except ValueError as err:
        raise ValueError(f"{argname}={url!r} is not a valid URL ({err}). {fix}") from err
    deadline = time.monotonic() + timeout
    try:
        response = _opener_for(url).open(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()  # it holds the open response
        raise ValueError(
            f"{argname}: the server at {url} answered HTTP {err.code} {err.reason}. {fix}"
        ) from err
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            reason = f"no answer within {timeout:g} s"
        raise ConnectionError(f"{argname}: could not reach {url} ({reason}). {fix}") from err
    except (TimeoutError, socket.timeout) as err:
        raise ConnectionError(
            f"{argname}: {url} did not answer within {timeout:g} s. {fix}"
        ) from err
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise ConnectionError(f"{argname}: could not download {url} ({err}). {fix}") from err
    with response:
        content_type = response.headers.get_content_type()
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ValueError(
                f"{argname}: {url} is {int(declared)} bytes, over the {limit}-byte download limit "
                "(fmwidget.images.MAX_DOWNLOAD_BYTES). Download and downscale it yourself."
            )
        chunks, total = [], 0
        try:
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError("download deadline passed")
                chunk = response.read(min(1 << 16, limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    break
        except (OSError, http.client.HTTPException) as err:
            raise ConnectionError(
                f"{argname}: downloading {url} failed or took over {timeout:g} s ({err}). {fix}"
            ) from err
    if total > limit:
        raise ValueError(
            f"{argname}: {url} sent more than the {limit}-byte download limit "
            "(fmwidget.images.MAX_DOWNLOAD_BYTES). Download and downscale it yourself."
        )
    return b"".join(chunks), content_type


# --------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------


def _three_floats(values: Sequence[float], name: str) -> tuple[float, float, float]:
    try:
        triple = tuple(float(v) for v in values)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be three numbers, one per channel; got {values!r}.") from err
    if len(triple) != 3 or not all(np.isfinite(triple)):
        raise ValueError(f"{name} must be three finite numbers, one per channel; got {values!r}.")
    return triple  # type: ignore[return-value]


def _size(value: Any, name: str, pair: bool) -> int | tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
        if len(items) == 1:
            value = items[0]
        elif pair and len(items) == 2:
            height, width = (_size(item, name, False) for item in items)
            return (height, width)  # type: ignore[return-value]
        else:
            kinds = "an int or (height, width)" if pair else "an int"
            raise ValueError(f"{name} must be {kinds} or None; got {value!r}.")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive number of pixels or None; got {value!r}.")
    return int(value)


class Preprocess:
    """Turns an RGB ``PIL.Image`` into a model input, and a model input back into a picture.

    ``x = pre(img)`` resizes the shorter side to ``resize`` (antialiased), crops the centre
    ``crop``, takes the pixel values 0..255 to ``0..max_value``, reverses the channels to BGR
    if ``bgr``, and normalises each channel: ``x = (value - mean) / std`` (``mean`` and ``std``
    in the model's channel order). ``pre.to_display(x)`` undoes the last three steps and
    returns the ``(H, W, 3)`` uint8 RGB picture the model saw.

    Parameters
    ----------
    resize : int, (int, int) or None
        An int is the length of the shorter side after resizing (the aspect ratio is kept);
        ``(height, width)`` resizes to exactly that size; None keeps the size.
    crop : int, (int, int) or None
        Side of the square (or ``(height, width)``) centre crop; None keeps the whole image.
    mean, std : three floats
        Per-channel normalisation, in the units of ``max_value`` and the model's channel order.
    max_value : float
        What pixel value 255 becomes before normalising: 1.0 (torchvision) or 255.0 (Caffe).
    bgr : bool
        Reverse RGB to BGR (Caffe models).
    interpolation : torchvision.transforms.InterpolationMode
        Resampling used by the resize.
    name : str
        A short name shown in ``repr``.

    Examples
    --------
    >>> from PIL import Image
    >>> pre = imagenet_transform()
    >>> x = pre(Image.new("RGB", (320, 240), (255, 0, 0)))
    >>> x.shape
    torch.Size([3, 224, 224])
    >>> pre.to_display(x)[0, 0]
    array([255,   0,   0], dtype=uint8)
    """

    def __init__(
        self,
        *,
        resize: int | tuple[int, int] | None = 256,
        crop: int | tuple[int, int] | None = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        max_value: float = 1.0,
        bgr: bool = False,
        interpolation: InterpolationMode = InterpolationMode.BILINEAR,
        name: str = "custom",
    ) -> None:
        self.resize = _size(resize, "resize", pair=True)
        self.crop = _size(crop, "crop", pair=True)
        self.mean = _three_floats(mean, "mean")
        self.std = _three_floats(std, "std")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive (it divides); got {std!r}.")
        if not (isinstance(max_value, (int, float)) and np.isfinite(max_value) and max_value > 0):
            raise ValueError(
                f"max_value must be a positive number (1.0 or 255.0); got {max_value!r}."
            )
        self.max_value = float(max_value)
        self.bgr = bool(bgr)
        if not isinstance(interpolation, InterpolationMode):
            raise TypeError(
                "interpolation must be a torchvision.transforms.InterpolationMode, e.g. "
                f"InterpolationMode.BILINEAR; got {interpolation!r}."
            )
        self.interpolation = interpolation
        self.name = str(name)

    def __repr__(self) -> str:
        return (
            f"Preprocess(name={self.name!r}, resize={self.resize}, crop={self.crop}, "
            f"mean={self.mean}, std={self.std}, max_value={self.max_value:g}, bgr={self.bgr})"
        )

    def __call__(self, img: Any) -> torch.Tensor:
        """Preprocess one image (anything ``load_image`` reads) into a (3, H, W) float32 tensor."""
        return self._forward(_as_rgb(img))

    def _forward(self, img: Image.Image) -> torch.Tensor:
        if self.resize is not None:
            size = [self.resize] if isinstance(self.resize, int) else list(self.resize)
            img = F.resize(img, size, interpolation=self.interpolation, antialias=True)
        if self.crop is not None:
            crop = [self.crop] if isinstance(self.crop, int) else list(self.crop)
            img = F.center_crop(img, crop)
        x = F.pil_to_tensor(img).to(torch.float32)
        if self.bgr:
            x = x.flip(0)
        if self.max_value != 255.0:
            x = x / 255.0  # the same arithmetic as torchvision's convert_image_dtype
            if self.max_value != 1.0:
                x = x * self.max_value
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return x.sub(mean).div(std).contiguous()

    def pixel_values(self, x: torch.Tensor) -> np.ndarray:
        """Undo the normalisation: ``(3, H, W)`` model input -> ``(H, W, 3)`` float64 RGB 0..255.

        Not clipped or rounded, so callers can check whether ``x`` fits this preprocessing.

        Examples
        --------
        >>> float(caffe_transform().pixel_values(torch.full((3, 8, 8), -200.0)).min())
        -96.0
        """
        chw = _chw_float64(x, "x")
        mean = np.asarray(self.mean).reshape(3, 1, 1)
        std = np.asarray(self.std).reshape(3, 1, 1)
        values = (chw * std + mean) * (255.0 / self.max_value)
        if self.bgr:
            values = values[::-1]
        return values.transpose(1, 2, 0)

    def to_display(self, x: torch.Tensor) -> np.ndarray:
        """Invert a model input ``x`` ((3, H, W) or (1, 3, H, W)) to the ``(H, W, 3)`` uint8
        RGB picture the model saw, clipped to 0..255.

        Examples
        --------
        >>> pre = caffe_transform()
        >>> pre.to_display(torch.zeros(3, 227, 227))[0, 0]   # the mean colour, back in RGB
        array([123, 117, 104], dtype=uint8)
        """
        return _to_uint8_image(self.pixel_values(x))


class _TorchvisionPreprocess(Preprocess):
    """A torchvision weights transform, run as it is, with the inverse from its mean/std."""

    def __init__(self, transform: Callable, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.transform = transform

    def __repr__(self) -> str:
        return f"from_torchvision({self.transform!r})".replace("\n", " ")

    def _forward(self, img: Image.Image) -> torch.Tensor:
        out = self.transform(img)
        return _check_model_input(out, "weights_transforms")[0]


def imagenet_transform(resize: int = 256, crop: int = 224) -> Preprocess:
    """The torchvision ImageNet preprocessing: resize the shorter side to ``resize`` (bilinear,
    antialiased), centre-crop ``crop``, scale to [0, 1], normalise with the ImageNet mean
    (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).

    Gives the same tensor as a torchvision classification model's ``weights.transforms()``.

    Examples
    --------
    >>> pre = imagenet_transform()
    >>> x, display = prepare_input(np.zeros((300, 400, 3), np.uint8), pre)
    >>> tuple(x.shape), display.shape
    ((1, 3, 224, 224), (224, 224, 3))
    """
    return Preprocess(resize=resize, crop=crop, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                      max_value=1.0, bgr=False, name="imagenet")


def caffe_transform(
    resize: int = 256, crop: int = 227, mean_bgr: Sequence[float] = CAFFE_MEAN_BGR
) -> Preprocess:
    """Caffe-style preprocessing (the bundled SqueezeNet weights need it): resize the whole
    image to ``resize`` x ``resize`` (bilinear, antialiased; the aspect ratio is not kept, as
    Caffe's ImageNet data were warped to 256 x 256), centre-crop ``crop``, RGB -> BGR, values
    0..255 minus ``mean_bgr`` per B, G, R channel, no division by a std. ``to_display``
    inverts it exactly (back to RGB). Pass ``resize=None`` to skip the resize, or a
    ``(height, width)`` pair.

    This reproduces the check in the SqueezeNet weights' README (Egyptian cat 0.81 on
    ``skimage.data.chelsea()``); keeping the aspect ratio instead gives 0.71.

    Examples
    --------
    >>> from PIL import Image
    >>> x = caffe_transform()(Image.new("RGB", (256, 256), (200, 100, 50)))
    >>> x[:, 0, 0].tolist()          # B, G, R minus (104, 117, 123)
    [-54.0, -17.0, 77.0]
    """
    if isinstance(resize, (int, np.integer)) and not isinstance(resize, bool):
        resize = (int(resize), int(resize))
    return Preprocess(resize=resize, crop=crop, mean=mean_bgr, std=(1.0, 1.0, 1.0),
                      max_value=255.0, bgr=True, name="caffe")


def from_torchvision(weights_transforms: Any) -> Preprocess:
    """Wrap a torchvision weights transform (``weights.transforms()``) as a ``Preprocess``.

    The transform itself makes the model input; the inverse for display uses its ``mean`` and
    ``std`` (values in [0, 1]). A weights enum (e.g. ``ResNet18_Weights.DEFAULT``) is accepted
    too, and its ``.transforms()`` used.

    Examples
    --------
    >>> from torchvision.models import ResNet18_Weights
    >>> pre = from_torchvision(ResNet18_Weights.IMAGENET1K_V1.transforms())
    >>> pre.crop
    224
    """
    t = weights_transforms
    if isinstance(t, Preprocess):
        return t
    if not callable(t) and callable(getattr(t, "transforms", None)):
        t = t.transforms()  # a weights enum member
    mean, std = getattr(t, "mean", None), getattr(t, "std", None)
    if not callable(t) or mean is None or std is None:
        raise TypeError(
            f"weights_transforms must be a torchvision weights transform with .mean and .std, "
            f"e.g. ResNet18_Weights.DEFAULT.transforms(); got {type(t).__name__}. For other "
            "callables pass them to prepare_input(img, transform=...) directly, or build a "
            "Preprocess(...)."
        )
    interpolation = getattr(t, "interpolation", InterpolationMode.BILINEAR)
    if not isinstance(interpolation, InterpolationMode):
        interpolation = InterpolationMode.BILINEAR
    return _TorchvisionPreprocess(
        t, resize=_size(getattr(t, "resize_size", None), "weights_transforms.resize_size", True),
        crop=_size(getattr(t, "crop_size", None), "weights_transforms.crop_size", True),
        mean=mean, std=std, max_value=1.0, bgr=False, interpolation=interpolation,
        name="torchvision",
    )


# --------------------------------------------------------------------------------------------
# prepare_input
# --------------------------------------------------------------------------------------------


def prepare_input(
    img: Any, transform: Callable | None = None, *, argname: str = "img"
) -> tuple[torch.Tensor, np.ndarray]:
    """Load and preprocess an image into the model input and the picture the model saw.

    Parameters
    ----------
    img : any input ``load_image`` accepts
        A float ``(3, H, W)`` or ``(1, 3, H, W)`` tensor is taken as the model input as it is
        (converted to float32; NaN/Inf refused) and ``transform`` is not applied to it.
    transform : Preprocess, torchvision weights transform, callable or None
        None means ``imagenet_transform()``. A torchvision ``ImageClassification`` is wrapped
        with ``from_torchvision``. Any other callable ``PIL.Image -> (3, H, W) float tensor`` is
        accepted; its output is validated.
    argname : str, optional
        The name used for ``img`` in error messages.

    Returns
    -------
    x : torch.Tensor
        ``(1, 3, H, W)`` float32, contiguous, on the CPU.
    display : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB, the same size as ``x``: the input as the model saw it (resized,
        cropped). It is the inverse of a ``Preprocess``; for a model-input tensor, the inverse
        of ``transform`` when the result fits in 0..255, otherwise the tensor min-max scaled as
        a whole; for a plain callable transform, also the min-max scaled tensor.

    Examples
    --------
    >>> x, display = prepare_input(np.full((240, 320, 3), 128, np.uint8))
    >>> x.shape, display.shape, display.dtype
    (torch.Size([1, 3, 224, 224]), (224, 224, 3), dtype('uint8'))
    """
    x, display = prepare_input_lazy(img, transform, argname=argname)
    return x, display()


def prepare_input_lazy(
    img: Any, transform: Callable | None = None, *, argname: str = "img"
) -> tuple[torch.Tensor, Callable[[], np.ndarray]]:
    """:func:`prepare_input`, with the picture computed only when called for.

    The widget's first view shows feature maps, not the input; inverting the preprocessing
    for the picture cost ~1.5 ms of a ~30 ms AlexNet first view on the 2-core VM.

    Returns
    -------
    x : torch.Tensor
        As from :func:`prepare_input`.
    display : callable
        No arguments; returns :func:`prepare_input`'s ``display``, computed on the first call.

    Examples
    --------
    >>> x, display = prepare_input_lazy(np.full((240, 320, 3), 128, np.uint8))
    >>> display().shape
    (224, 224, 3)
    """
    transform = _resolve_transform(transform)
    loaded = load_image(img, argname=argname)
    if isinstance(loaded, torch.Tensor):
        return loaded, functools.cache(functools.partial(_tensor_display, loaded, transform))
    if isinstance(transform, Preprocess):
        x = _check_model_input(transform._forward(loaded), "transform")
        return x, functools.cache(functools.partial(transform.to_display, x))
    try:
        out = transform(loaded)
    except Exception as err:  # the user's code: report which stage failed, keep the cause
        raise ValueError(
            f"transform {transform!r} raised {type(err).__name__}: {err}. It is called with an "
            "RGB PIL.Image and must return a (3, H, W) float tensor."
        ) from err
    x = _check_model_input(out, "transform")
    return x, functools.cache(functools.partial(_minmax_display, x))


def _resolve_transform(transform: Any) -> Callable:
    if transform is None:
        return imagenet_transform()
    if isinstance(transform, Preprocess):
        return transform
    if callable(transform) and all(hasattr(transform, a) for a in ("mean", "std", "crop_size")):
        return from_torchvision(transform)
    if not callable(transform) and callable(getattr(transform, "transforms", None)):
        return from_torchvision(transform)
    if not callable(transform):
        raise TypeError(
            f"transform must be None, a Preprocess (imagenet_transform(), caffe_transform()), "
            "weights.transforms() or a callable PIL.Image -> tensor; got "
            f"{type(transform).__name__}."
        )
    return transform


def _check_model_input(out: Any, name: str) -> torch.Tensor:
    """Validate a transform's output; return it as (1, 3, H, W) float32 contiguous CPU."""
    expected = f"{name} must return a (3, H, W) float tensor (torch.float32)"
    if isinstance(out, np.ndarray):
        raise TypeError(
            f"{expected}; it returned a numpy array of shape {out.shape}. Convert it with "
            "torch.from_numpy(arr.transpose(2, 0, 1).copy()).float(), or end with "
            "transforms.v2.ToImage() and ToDtype(torch.float32, scale=True)."
        )
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{expected}; it returned {type(out).__name__}.")
    if not out.is_floating_point():
        raise TypeError(
            f"{expected}; it returned a {out.dtype} tensor. Add "
            "transforms.v2.ToDtype(torch.float32, scale=True) (and Normalize) at its end."
        )
    shape = tuple(out.shape)
    if not (out.ndim == 3 or (out.ndim == 4 and shape[0] == 1)) or shape[-3] != 3:
        raise ValueError(
            f"{expected}; it returned shape {shape}. Return channels first, one image, 3 channels "
            "(e.g. x.permute(2, 0, 1) for (H, W, 3), x.expand(3, -1, -1) for gray)."
        )
    height, width = shape[-2:]
    if min(height, width) < MIN_SIDE:
        raise ValueError(
            f"{name} returned a {height} x {width} input; a CNN needs at least {MIN_SIDE} x "
            f"{MIN_SIDE} pixels (usually 224 x 224). Resize in the transform."
        )
    x = out.detach().to("cpu", torch.float32).reshape(1, 3, height, width).contiguous()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} returned NaN or Inf values; check its normalisation (std of 0?).")
    return x


def _as_rgb(img: Any) -> Image.Image:
    if isinstance(img, Image.Image) and img.mode == "RGB":
        return img
    loaded = load_image(img)
    if isinstance(loaded, torch.Tensor):
        raise TypeError(
            "img is already a model-input tensor (3, H, W); use it directly, or pass it to "
            "prepare_input, which skips the transform for tensors."
        )
    return loaded


def _chw_float64(x: Any, name: str) -> np.ndarray:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch tensor (3, H, W) or (1, 3, H, W); got {type(x).__name__}."
        )
    shape = tuple(x.shape)
    if x.ndim == 4 and shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(
            f"{name} must have shape (3, H, W) or (1, 3, H, W); got {shape}. Pass one model input."
        )
    return x.detach().to("cpu", torch.float64).numpy()


def _to_uint8_image(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def _minmax_display(x: torch.Tensor) -> np.ndarray:
    """The tensor min-max scaled as a whole (not per channel) to 0..255, as (H, W, 3) uint8."""
    values = _chw_float64(x, "x").transpose(1, 2, 0)
    low, high = float(values.min()), float(values.max())
    if high - low <= 0:
        return np.zeros(values.shape, np.uint8)
    return _to_uint8_image((values - low) * (255.0 / (high - low)))


def _tensor_display(x: torch.Tensor, transform: Callable) -> np.ndarray:
    if isinstance(transform, Preprocess):
        values = transform.pixel_values(x)
        tol = _DISPLAY_TOLERANCE
        if values.min() >= -tol and values.max() <= 255 + tol:
            return _to_uint8_image(values)
    return _minmax_display(x)
