"""Render the README's pictures with the engine itself (run from the repository root).

    python scripts/render_docs_images.py
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

from fmwidget import FeatureMapExplorer, sample_image

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def _save(url: str, path: Path, zoom: int) -> None:
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA")
    img = img.resize((img.width * zoom, img.height * zoom), Image.NEAREST)
    img.save(path)
    print("wrote", path, img.size)


def _rgb_mosaic(url: str, meta: dict, cols: int = 16) -> Image.Image:
    """Re-arrange the filters grid's RGB column (one tile per filter) into a mosaic."""
    grid = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA")
    col = meta["in_channels"].index(-1)
    th, tw, pad = meta["tile_h"], meta["tile_w"], meta["pad"]
    n = meta["rows"]
    rows = -(-n // cols)
    out = Image.new("RGBA", (cols * (tw + 1) + 1, rows * (th + 1) + 1), (255, 255, 255, 0))
    for i in range(n):
        x0, y0 = col * (tw + pad), i * (th + pad)
        tile = grid.crop((x0, y0, x0 + tw, y0 + th))
        out.paste(tile, (1 + (i % cols) * (tw + 1), 1 + (i // cols) * (th + 1)))
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with FeatureMapExplorer("squeezenet", sample_image(), view="filters", page_size=128) as w:
        # 96 first-layer filters of the trained SqueezeNet: one row per filter, the RGB
        # composite first, then B, G, R kernels. Shown as a 2-up page of 48 rows each.
        mosaic = _rgb_mosaic(w._grid, w._grid_meta)
        mosaic = mosaic.resize((mosaic.width * 8, mosaic.height * 8), Image.NEAREST)
        mosaic.save(OUT / "squeezenet-filters.png")
        print("wrote", OUT / "squeezenet-filters.png", mosaic.size)
        w.view = "maps"
        w.page_size = 64
        _save(w._grid, OUT / "squeezenet-maps.png", zoom=3)


if __name__ == "__main__":
    main()
