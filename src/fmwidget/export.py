"""Export the widget: a standalone HTML file that works offline, and the path checks of both exports.

:func:`to_html` takes a snapshot (the widgets' state as ipywidgets embeds it, plus the grids of
the layers to include), never the widget itself. The PNG export is :mod:`fmwidget.figure`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import figure

__all__ = ["HTML_CAP_BYTES", "check_path", "pick_layers", "png_data_url", "save_png", "to_html"]

STATIC = Path(__file__).resolve().parent / "static"
EMBED = STATIC / "embed"
HTML_CAP_BYTES = 32 << 20
"""``to_html(layers=None)`` includes every layer while their grids stay within this many bytes
of codes; beyond it, the current layer and its neighbours (:data:`NEIGHBOURS` on each side)."""
NEIGHBOURS = 2
OFFLINE_NOTE = (
    "Saved page: no Python kernel here, so guided backprop, Grad-CAM, sorting, comparing and new "
    "images are off. Layers, views, channels, pages, colormaps and normalisation all work."
)
save_png = figure.save_png


def check_path(path: Any, suffixes: tuple[str, ...], argname: str = "path") -> Path:
    """``path`` as a Path, if it names a file with one of ``suffixes`` in an existing folder."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{argname} must be a file name (str or pathlib.Path), got {type(path).__name__} {path!r}.")
    target = Path(path).expanduser()
    if target.suffix.lower() not in suffixes:
        raise ValueError(f"{argname}={str(path)!r} should end in {suffixes[0]}; for example {target.stem or 'view'}{suffixes[0]}.")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{argname}={str(path)!r}: the folder {str(folder)!r} does not exist. Create it first "
            f"(pathlib.Path({str(folder)!r}).mkdir(parents=True)) or save somewhere else."
        )
    if target.is_dir():
        raise IsADirectoryError(f"{argname}={str(path)!r} is a folder; give a file name inside it.")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{argname}={str(path)!r}: the folder {str(folder)!r} is not writable; save somewhere else.")
    return target


def png_data_url(rgb: Any) -> str:
    """An (H, W, 3) uint8 picture (array or PIL image) as a PNG data URL (the input image the
    side view shows, thumbnails)."""
    buf = io.BytesIO()
    img = rgb if isinstance(rgb, Image.Image) else Image.fromarray(np.ascontiguousarray(rgb))
    img.save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def pick_layers(names: Sequence[str], sizes: Sequence[int], current: str, layers: Any) -> tuple[list[str], str]:
    """The layers an HTML export includes, and a note when it holds fewer than asked for.

    ``sizes`` are each layer's bytes of codes (maps and filters). ``layers=None``: all of them
    within :data:`HTML_CAP_BYTES`, else ``current`` and its neighbours; a list names them (the
    current layer is always included).
    """
    if layers is None:
        if sum(sizes) <= HTML_CAP_BYTES:
            return list(names), ""
        i = names.index(current)
        lo, hi = max(0, i - NEIGHBOURS), min(len(names), i + NEIGHBOURS + 1)
        mb = sum(sizes) / 2**20
        return list(names[lo:hi]), (
            f"This page holds layers {lo + 1} to {hi} of {len(names)}: all of them would be "
            f"{mb:.0f} MB, over the {HTML_CAP_BYTES >> 20} MB cap. Export others with "
            f"to_html(path, layers=[...])."
        )
    if isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not layers:
        raise TypeError(f"layers must be None or a non-empty list of layer names, got {layers!r}.")
    chosen = []
    for name in layers:
        if name not in names:
            raise ValueError(f"layers: {name!r} is not one of the offered layers; use names from layer_names.")
        if name not in chosen:
            chosen.append(name)
    if current not in chosen:
        chosen.append(current)
    kept = [n for n in names if n in chosen]
    note = "" if len(kept) == len(names) else f"This page holds {len(kept)} of the model's {len(names)} layers."
    return kept, note


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


def to_html(embedded: dict, bundle: list[dict], note: str, path: str | Path, *, title: str) -> Path:
    """Write one standalone HTML file of an embedded widget that works offline.

    Parameters
    ----------
    embedded : dict
        ``ipywidgets.embed.embed_data(views=[widget], drop_defaults=False)`` of the widget
        (``drop_defaults=False`` keeps the class-level ``_esm`` and ``_css``).
    bundle : list of dict
        The data-trait payloads (maps and filters grids) of the layers to include: the page
        draws them with no kernel.
    note : str
        Said at the top of the widget (e.g. which layers the page holds).
    path : str or pathlib.Path
        The ``.html`` file to write.
    title : str
        The page's title.

    Everything (require.js, the widgets HTML manager, anywidget, fmwidget's front end and the
    grids) is inlined; nothing is fetched from the network.
    """
    target = Path(path).expanduser()
    manager = embedded["manager_state"]
    for entry in manager["state"].values():
        state = entry["state"]
        if "_config" in state and "_layers" in state:  # the explorer (not its layout model)
            state["_bundle"] = bundle
            state["_config"] = {**state["_config"], "offline": OFFLINE_NOTE, "export_note": note}
            state["_error"] = ""
            state["_status"] = "ready"
            # what needs Python to answer (another image, a ranking) is off in the saved page
            state.update(compare=-1, sort="channel", _compare={}, _ranking={}, _scan={}, _top={})
    state_json = json.dumps(manager).replace("</", "<\\/")
    views = "".join(
        '<script type="application/vnd.jupyter.widget-view+json">'
        + json.dumps(view).replace("</", "<\\/")
        + "</script>"
        for view in embedded["view_specs"]
    )
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            _inline(_asset("require.js")),
            _inline(_anywidget_amd()),
            '<script type="application/vnd.jupyter.widget-state+json">' + state_json + "</script>",
            "</head><body>",
            f"<h3 style='font-family:sans-serif'>{html.escape(title)}</h3>",
            views,
            _inline(_asset("embed-amd.js")),
            "</body></html>",
        ]
    )
    target.write_text(page, encoding="utf-8")
    return target
