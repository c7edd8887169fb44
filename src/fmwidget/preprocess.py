"""Preprocessing: an RGB image to the model's ``(3, H, W)`` input, and back to a picture.

A ``Preprocess`` turns the RGB image into a ``(3, H, W)`` float32 tensor and back into the
``(H, W, 3)`` uint8 picture the model saw (resized, cropped), used for overlays.
``prepare_input`` loads (:func:`fmwidget.loading.load_image`) and preprocesses in one step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from .loading import MIN_SIDE, load_image

__all__ = [
    "Preprocess",
    "caffe_transform",
    "display_image",
    "from_torchvision",
    "imagenet_transform",
    "model_input",
    "prepare_input",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)
_DISPLAY_TOLERANCE = 2.0  # pixel levels an inverse may overshoot 0..255 and still count as valid

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

    :func:`model_input` and :func:`display_image` in one call.

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
        ``(H, W, 3)`` uint8 RGB, the same size as ``x``: see :func:`display_image`.

    Examples
    --------
    >>> x, display = prepare_input(np.full((240, 320, 3), 128, np.uint8))
    >>> x.shape, display.shape, display.dtype
    (torch.Size([1, 3, 224, 224]), (224, 224, 3), dtype('uint8'))
    """
    x = model_input(img, transform, argname=argname)
    return x, display_image(x, transform)


def model_input(img: Any, transform: Callable | None = None, *, argname: str = "img") -> torch.Tensor:
    """The ``(1, 3, H, W)`` float32 CPU model input for ``img`` (see :func:`prepare_input`).

    Examples
    --------
    >>> model_input(np.full((240, 320, 3), 128, np.uint8)).shape
    torch.Size([1, 3, 224, 224])
    """
    transform = _resolve_transform(transform)
    loaded = load_image(img, argname=argname)
    if isinstance(loaded, torch.Tensor):
        return loaded
    if isinstance(transform, Preprocess):
        return _check_model_input(transform._forward(loaded), "transform")
    try:
        out = transform(loaded)
    except Exception as err:  # the user's code: report which stage failed, keep the cause
        raise ValueError(
            f"transform {transform!r} raised {type(err).__name__}: {err}. It is called with an "
            "RGB PIL.Image and must return a (3, H, W) float tensor."
        ) from err
    return _check_model_input(out, "transform")


def display_image(x: torch.Tensor, transform: Callable | None = None) -> np.ndarray:
    """The ``(H, W, 3)`` uint8 RGB picture the model saw, from its input ``x``.

    The inverse of a ``Preprocess`` (or of a torchvision weights transform) when the result
    fits in 0..255; otherwise, and for a plain callable transform, ``x`` min-max scaled as a
    whole.

    Examples
    --------
    >>> display_image(torch.zeros(1, 3, 227, 227), caffe_transform())[0, 0]
    array([123, 117, 104], dtype=uint8)
    """
    return _tensor_display(x, _resolve_transform(transform))


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
