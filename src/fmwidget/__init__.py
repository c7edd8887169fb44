"""fmwidget: see what a PyTorch CNN has learned and what it sees, in one notebook widget.

>>> from fmwidget import FeatureMapExplorer
>>> FeatureMapExplorer(model, img)  # doctest: +SKIP
"""

from ._widget import FeatureMapExplorer
from .models import demo_model, pretrained_squeezenet, sample_image
from .preprocess import caffe_transform, imagenet_transform

__all__ = [
    "FeatureMapExplorer",
    "caffe_transform",
    "demo_model",
    "imagenet_transform",
    "pretrained_squeezenet",
    "sample_image",
]
__version__ = "0.1.0"
