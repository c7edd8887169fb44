"""Render the README's pictures with the package itself (run from the repository root).

    python scripts/render_docs_images.py

Every picture is ``FeatureMapExplorer.save_png`` of a view, with the bundled ImageNet-trained
SqueezeNet on the bundled cat and scikit-image's photos (all offline).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data

from fmwidget import FeatureMapExplorer, sample_image

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def _save(w: FeatureMapExplorer, name: str, width: int = 900) -> None:
    path = w.save_png(OUT / name, width=width)
    print("wrote", path)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.rocket(), skimage.data.camera(),
              skimage.data.coins(), skimage.data.horse(), skimage.data.clock(), skimage.data.brick(),
              skimage.data.immunohistochemistry(), skimage.data.hubble_deep_field(), skimage.data.grass(),
              skimage.data.gravel(), skimage.data.moon(), skimage.data.colorwheel(), skimage.data.retina(),
              skimage.data.cell(), np.asarray(sample_image())]
    with FeatureMapExplorer("squeezenet", [sample_image(), skimage.data.astronaut()]) as w:
        # the 96 first-layer filters: oriented edges and colour-opponent blobs
        w.view, w.page_size = "filters", 128
        _save(w, "squeezenet-filters.png", width=820)
        w.view, w.page_size, w.layer = "maps", 64, "features.3.expand3x3"
        _save(w, "squeezenet-maps.png", width=820)
        w.compare = 1
        w.page_size = 16
        _save(w, "compare.png", width=600)
        w.compare = -1
        w.layer, w.sort, w.page_size = "features.12.expand3x3", "max", 64
        _save(w, "sorted.png", width=600)
        w.sort = "channel"
        w.scan(photos, layers=["features.12.expand3x3"], k=6, batch_size=8)
        best = w.rank_channels("features.12.expand3x3", by="max")[0][0]
        w.channel, w.view = best, "side"
        _save(w, "top-images.png", width=900)


if __name__ == "__main__":
    main()
