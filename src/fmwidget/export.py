"""Export the widget: a standalone offline HTML file, or a PNG of the current view."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:  # pragma: no cover
    from ._widget import FeatureMapExplorer

__all__ = ["save_png", "to_html"]

STATIC = Path(__file__).resolve().parent / "static"
EMBED = STATIC / "embed"


def _path(path: object, suffixes: tuple[str, ...]) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name (str or pathlib.Path), got {type(path).__name__} {path!r}.")
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        raise ValueError(f"path={str(path)!r} should end in {suffixes[0]}.")
    return target


def _asset(name: str) -> str:
    path = EMBED / name
    if not path.is_file():
        raise FileNotFoundError(
            f"to_html needs {path}, which the front-end build copies there. Rebuild it from the "
            f"repository with `npm install && npm run build` (or reinstall: pip install -e .)."
        )
    return path.read_text(encoding="utf-8")


def _anywidget_amd() -> str:
    """anywidget's AMD build, as its wheel ships it, with its module named for require.js."""
    from jupyter_core.paths import jupyter_path

    for root in jupyter_path("nbextensions"):
        path = Path(root) / "anywidget" / "index.js"
        if path.is_file():
            source = path.read_text(encoding="utf-8")
            # An inline anonymous define() would be a "mismatched anonymous define" for
            # require.js; naming it lets everything live in one file.
            named, count = re.subn(r"\bdefine\(\[", 'define("anywidget", [', source)
            if count != 1:
                raise RuntimeError(f"unexpected anywidget AMD build at {path}: {count} define() calls")
            return named
    raise FileNotFoundError(
        "to_html needs anywidget's AMD build (share/jupyter/nbextensions/anywidget/index.js, "
        "installed with the anywidget wheel); reinstall it with pip install --force-reinstall anywidget."
    )


def _inline(source: str) -> str:
    # A literal "</script" inside an inline script would end it early.
    return "<script>" + source.replace("</script", "<\\/script") + "</script>"


def to_html(widget: "FeatureMapExplorer", path: str | Path, *, title: str | None = None) -> Path:
    """Write ``widget`` with its current state to one standalone HTML file that works offline.

    Everything (require.js, the widgets HTML manager, anywidget, fmwidget's front end and the
    current pictures) is inlined; nothing is fetched from a CDN. The page shows the current
    state; pictures that need Python (another layer) are not available in it.

    Examples
    --------
    >>> w.to_html("resnet-conv1.html")  # doctest: +SKIP
    """
    from ipywidgets.embed import embed_data

    target = _path(path, (".html", ".htm"))
    # drop_defaults=False keeps the class-level _esm/_css in the saved state (e2e.md).
    data = embed_data(views=[widget], drop_defaults=False)
    state = json.dumps(data["manager_state"]).replace("</", "<\\/")
    views = "".join(
        '<script type="application/vnd.jupyter.widget-view+json">'
        + json.dumps(view).replace("</", "<\\/")
        + "</script>"
        for view in data["view_specs"]
    )
    name = title or f"fmwidget: {widget._model_label} / {widget.layer}"
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html><head><meta charset="utf-8">',
            f"<title>{html.escape(name)}</title>",
            _inline(_asset("require.js")),
            _inline(_anywidget_amd()),
            '<script type="application/vnd.jupyter.widget-state+json">' + state + "</script>",
            "</head><body>",
            f"<h3 style='font-family:sans-serif'>{html.escape(name)}</h3>",
            views,
            _inline(_asset("embed-amd.js")),
            "</body></html>",
        ]
    )
    target.write_text(page, encoding="utf-8")
    return target


def _decode(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA")


def _fit(img: Image.Image, width: int) -> Image.Image:
    """Enlarge (nearest, like the widget's pixelated rendering) to about ``width`` pixels."""
    zoom = max(1, width // max(img.width, 1))
    return img.resize((img.width * zoom, img.height * zoom), Image.NEAREST)


def _legend(meta: dict, width: int) -> Image.Image:
    legend = meta.get("legend") or {}
    colors = legend.get("colors") or ["#000000", "#ffffff"]
    bar = Image.new("RGBA", (width, 34), "white")
    draw = ImageDraw.Draw(bar)
    step = width / len(colors)
    for i, c in enumerate(colors):
        draw.rectangle([int(i * step), 0, int((i + 1) * step), 14], fill=c)
    font = ImageFont.load_default()
    lo, hi = legend.get("min"), legend.get("max")
    rel = " (per tile)" if legend.get("relative") else ""
    draw.text((0, 17), f"{lo:.4g}" if isinstance(lo, (int, float)) else "min", fill="black", font=font)
    text = (f"{hi:.4g}" if isinstance(hi, (int, float)) else "max") + rel
    draw.text((width - 8 * len(text), 17), text, fill="black", font=font)
    return bar


def save_png(widget: "FeatureMapExplorer", path: str | Path, *, width: int = 900) -> Path:
    """Save the current view as the user sees it (title, pictures enlarged, legend) as PNG.

    Examples
    --------
    >>> w.save_png("conv1-maps.png")  # doctest: +SKIP
    """
    target = _path(path, (".png",))
    info = widget._capture().info(widget.layer)
    if widget.view == "side":  # which sets _input_png (FeatureMapExplorer._refresh)
        parts = [_decode(widget._input_png)]
        side = widget._side
        if side.get("filter"):
            parts.insert(0, _decode(side["filter"]["url"]))
        parts.insert(len(parts) - 1, _decode(side["map"]["url"]))
        each = width // len(parts)
        pictures = [_fit(p, each) for p in parts]
        body = Image.new("RGBA", (sum(p.width for p in pictures) + 8 * len(pictures), max(p.height for p in pictures)), "white")
        x = 0
        for p in pictures:
            body.paste(p, (x, 0), p)
            x += p.width + 8
        meta = side["map"]["meta"]
        caption = f"{info.name} ({info.type}) channel {widget.channel}: filter, feature map, input"
    else:
        grid = _fit(_decode(widget._grid), width)
        body = Image.new("RGBA", grid.size, "white")
        body.paste(grid, (0, 0), grid)
        meta = widget._grid_meta
        what = "filters" if widget.view == "filters" else "feature maps"
        caption = (
            f"{info.name} ({info.type}) {what}, output {tuple(info.out_shape)}, "
            f"page {meta.get('page', 0) + 1}/{meta.get('n_pages', 1)}"
        )
    legend = _legend(meta, min(body.width, 400))
    out = Image.new("RGB", (max(body.width, legend.width), body.height + legend.height + 28), "white")
    ImageDraw.Draw(out).text((0, 6), f"{widget._model_label}: {caption}", fill="black", font=ImageFont.load_default())
    out.paste(body, (0, 24), body)
    out.paste(legend, (0, 28 + body.height))
    out.save(target)
    return target

