"""Image input: every kind of image a user may hand us, as an RGB ``PIL.Image``.

``load_image`` accepts a path, an http(s) URL, a PIL image, a numpy array, encoded bytes or a
torch tensor and returns an RGB ``PIL.Image`` (or, for a tensor that already is a model input,
that tensor). Turning it into the model's input is :mod:`fmwidget.preprocess`.

Every refusal is a ``TypeError``, ``ValueError`` or ``OSError`` subclass (``FileNotFoundError``,
``IsADirectoryError``, ``ConnectionError``) whose message names the argument, what was wrong
and how to fix it.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import urllib.parse
import urllib.request
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from . import download

__all__ = ["MAX_DOWNLOAD_BYTES", "MAX_PIXELS", "MIN_SIDE", "URL_TIMEOUT_S", "load_image"]

URL_TIMEOUT_S = 10.0
"""Seconds to wait for an image URL (to connect, and for the whole download)."""
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
"""Largest image download (or data URL) accepted, in bytes."""
MAX_PIXELS = 64_000_000
"""Largest encoded image decoded, in pixels (checked from the header, before decoding)."""
MIN_SIDE = 8
"""Smallest height or width of a model-input tensor."""

_KINDS = (
    "a file path, an http(s) URL, a PIL image, a numpy array of shape (H, W), (H, W, 1), "
    "(H, W, 3) or (H, W, 4), the bytes of an encoded image, or a torch tensor"
)



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
        return _from_bytes(bytes(img), argname, "the data")
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
        return _from_bytes(download.decode_data_url(stripped, argname, MAX_DOWNLOAD_BYTES), argname, "the data URL")
    if scheme in ("http", "https"):
        data, content_type = download.fetch(stripped, argname, URL_TIMEOUT_S, MAX_DOWNLOAD_BYTES)
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
            "fmwidget.loading.MAX_PIXELS if you trust it."
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
