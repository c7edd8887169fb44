"""``save_png``: the current view as a picture, with a title, panel titles and a legend per panel.

The pixels of every panel come from :mod:`fmwidget.render`, the same arithmetic the browser
uses, so a saved grid equals the widget's canvas (a real-browser test checks it). The grid's
place in the file is recorded in the PNG text chunk ``fmwidget:grid`` (``x, y, width, height``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from . import codec, render, rules

__all__ = ["save_png"]

MARGIN = 20
TITLE_PX = 16
TEXT_PX = 13
LEGEND_H = 14


@dataclass
class Panel:
    title: str
    image: np.ndarray  # (H, W, 3) uint8
    legend: dict | None  # {"cmap", "low", "high", "zero", "caption"} or None
    is_grid: bool = False


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _fmt(value: float) -> str:
    if not np.isfinite(value):
        return "nan"
    return f"{value:.3g}"


def legend_for(norm: str, cmap: str, vmin: np.ndarray, vmax: np.ndarray, what: str) -> dict:
    """What the colours of a panel mean: the same words as the browser's legend (js/legend.js)."""
    low, high, big = render.layer_stats(vmin, vmax)
    shared = what == "both images"  # compared images share each channel's scale: not "each its own"
    each = "each channel, one scale over both images," if shared else f"{what}: each its own"
    if norm == "channel":
        return {"cmap": cmap, "low": "min", "high": "max", "zero": None, "caption": f"{each} min to max"}
    if norm == "channel_symmetric":
        return {"cmap": cmap, "low": "-max|v|", "high": "+max|v|", "zero": 0.5,
                "caption": f"{each}{'' if shared else ' scale,'} 0 in the middle"}
    if norm == "layer":
        zero = (-low / (high - low)) if high > low and low < 0 < high else None
        return {"cmap": cmap, "low": _fmt(low), "high": _fmt(high), "zero": zero, "caption": f"{what}: one scale for the layer"}
    return {"cmap": cmap, "low": _fmt(-big), "high": _fmt(big), "zero": 0.5, "caption": f"{what}: one scale, 0 in the middle"}


def _legend_image(legend: dict, width: int) -> Image.Image:
    width = max(240, min(width, 420))
    font = _font(TEXT_PX)
    img = Image.new("RGB", (width, LEGEND_H + 2 * TEXT_PX + 10), "white")
    draw = ImageDraw.Draw(img)
    lut = rules.lut(legend["cmap"])
    bar = lut[np.floor(np.linspace(0, 255, width) + 0.5).astype(int)]
    img.paste(Image.fromarray(np.repeat(bar[None], LEGEND_H, axis=0)), (0, 0))
    draw.rectangle([0, 0, width - 1, LEGEND_H - 1], outline=(120, 120, 120))
    y = LEGEND_H + 2
    draw.text((0, y), str(legend["low"]), fill="black", font=font)
    high = str(legend["high"])
    draw.text((width - draw.textlength(high, font=font), y), high, fill="black", font=font)
    if legend.get("zero") is not None:
        x = legend["zero"] * width
        draw.line([x, 0, x, LEGEND_H + 3], fill=(0, 0, 0))
        draw.text((x - draw.textlength("0", font=font) / 2, y), "0", fill="black", font=font)
    draw.text((0, y + TEXT_PX + 2), legend["caption"], fill=(80, 80, 80), font=font)
    return img


def _page_items(count: int, page: int, size: int, order: list[int] | None = None) -> np.ndarray:
    if order:
        return np.asarray(order[page * size : (page + 1) * size])
    return np.arange(page * size, min(count, (page + 1) * size))


def _span(items: np.ndarray) -> str:
    contiguous = len(items) and items[-1] - items[0] == len(items) - 1
    return f"{items[0]}-{items[-1]}" if contiguous else f"{len(items)}"


def diff_norm(norm: str) -> str:
    """How a difference is coloured: 0 in the middle, per channel or for the layer as ``norm``."""
    return "channel_symmetric" if norm.startswith("channel") else "symmetric"


def _grid(p: dict, items: np.ndarray, norm: str, cmap: str, width: int, scale=None) -> np.ndarray:
    rows = [p["items"].index(int(i)) for i in items] if "items" in p else items - p["first"]
    tiles = p["codes"][rows]
    tables = render.colour_tables(p["vmin"], p["vmax"], norm, cmap, items, scale=scale)
    layout = render.grid_layout(len(items), tiles.shape[1], tiles.shape[2], width)
    return render.draw_grid(tiles, tables, layout, render.hex_rgb(rules.CMAPS[cmap][2]))


def _maps_panels(snap: dict, width: int) -> list[Panel]:
    p = codec.unpack(snap["maps"])
    items = _page_items(p["count"], snap["page"], snap["page_size"], snap.get("order"))
    what = f"channels {_span(items)} of {p['count']}" if not snap.get("order") else f"{len(items)} channels"
    if snap.get("ranking"):
        r = snap["ranking"]
        what += f", sorted by {r['by']}" + (f" for {r['label']}" if r.get("label") else "")
    if p.get("scale", 1) > 1:
        what += f" (shrunk {p['scale']}x)"
    norm, cmap = snap["norm"], snap["cmap"]
    cmp = snap.get("compare_data")
    if not cmp:
        return [Panel(f"feature maps, {what}", _grid(p, items, norm, cmap, width), legend_for(norm, cmap, p["vmin"], p["vmax"], "channels"), True)]
    b, d = codec.unpack(cmp["maps"]), codec.unpack(cmp["diff"])
    scale = render.shared_scale((p["vmin"], p["vmax"]), (b["vmin"], b["vmax"]))
    labels = snap["labels"]
    legend = legend_for(norm, cmap, *scale, "both images")
    dn = diff_norm(norm)
    return [
        Panel(f"{labels[snap['image_index']]}: {what}", _grid(p, items, norm, cmap, width, scale), legend, True),
        Panel(f"{labels[snap['compare']]}: the same channels, one scale with the first", _grid(b, items, norm, cmap, width, scale), legend),
        Panel("difference, first minus second", _grid(d, items, dn, "bwr", width), legend_for(dn, "bwr", d["vmin"], d["vmax"], "first - second")),
    ]


def _filters_panel(snap: dict, width: int, rows: np.ndarray, title: str) -> Panel:
    p = codec.unpack(snap["filters"])
    w = p["codes"][rows - p["first"]]  # (n, I, kh, kw)
    gap = render.hex_rgb(rules.CMAPS[snap["cmap"]][2])
    legend = legend_for(snap["norm"], snap["cmap"], p["vmin"], p["vmax"], "filters")
    if p["depthwise"]:
        tiles = w[:, 0]
        tables = render.colour_tables(p["vmin"], p["vmax"], snap["norm"], snap["cmap"], rows)
        layout = render.grid_layout(len(rows), tiles.shape[1], tiles.shape[2], width)
        return Panel(title, render.draw_grid(tiles, tables, layout, gap), legend, True)
    if w.shape[1] == 3:  # a first layer: one colour composite per filter
        rgb = render.composite(w, p["vmin"][rows], p["vmax"][rows], p["bgr"])
        layout = render.grid_layout(len(rows), rgb.shape[1], rgb.shape[2], width)
        legend = {"cmap": "gray", "low": "-max|w|", "high": "+max|w|", "zero": 0.5,
                  "caption": "RGB: each filter's weights per input colour, grey = 0"}
        return Panel(title, render.draw_grid(rgb, None, layout, render.hex_rgb(rules.COMPOSITE_GAP)), legend, True)
    ins = _page_items(w.shape[1], snap["in_page"], rules.IN_PAGE)
    kernels = w[:, ins].reshape(-1, w.shape[2], w.shape[3])
    tables = np.repeat(render.colour_tables(p["vmin"], p["vmax"], snap["norm"], snap["cmap"], rows), len(ins), axis=0)
    layout = render.grid_layout(len(kernels), w.shape[2], w.shape[3], width, cols=len(ins), gap=1)
    title += f"; rows: output filters, columns: inputs {ins[0]}-{ins[-1]} of {w.shape[1]}"
    return Panel(title, render.draw_grid(kernels, tables, layout, gap), legend, True)


def _plane_panel(p: dict, c: int, norm: str, cmap: str, width: int, title: str, what: str, scale=None) -> Panel:
    table = render.colour_tables(p["vmin"], p["vmax"], norm, cmap, [c], scale=scale)[0]
    h, w = p["codes"].shape[1:]
    zoom = max(1, min(MARGIN, width // max(h, w)))
    lo, hi = (p["vmin"], p["vmax"]) if scale is None else scale
    legend = legend_for(norm, cmap, lo, hi, what)
    if norm == "channel":
        legend.update(low=_fmt(lo[c]), high=_fmt(hi[c]), caption=f"{what}: from its min to its max")
    return Panel(f"{title} ({h}x{w})", render.plane_image(p["codes"][0], table, zoom), legend)


def _side_panels(snap: dict, width: int) -> list[Panel]:
    c = snap["channel"]
    panels = []
    if "filters" in snap:
        fnorm, fcmap = rules.resolve("filters", snap.get("norm_choice", "auto"), snap.get("cmap_choice", "auto"))
        panels.append(_filter_panel(snap, c, fnorm, fcmap, width // 3))
    m = codec.unpack(snap["map"])
    norm, cmap = snap["norm"], snap["cmap"]
    cmp = snap.get("compare_data")
    if cmp:
        b, d = codec.unpack(cmp["map"]), codec.unpack(cmp["map_diff"])
        scale = render.shared_scale((m["vmin"], m["vmax"]), (b["vmin"], b["vmax"]))
        labels = snap["labels"]
        dn = diff_norm(norm)
        return panels + [
            _plane_panel(m, c, norm, cmap, width // 3, f"{labels[snap['image_index']]}: map {c}", "both images", scale),
            _plane_panel(b, c, norm, cmap, width // 3, f"{labels[snap['compare']]}: map {c}", "both images", scale),
            _plane_panel(d, c, dn, "bwr", width // 3, "difference", "first - second"),
        ]
    panels.append(_plane_panel(m, c, norm, cmap, width // 3, f"feature map {c}", f"channel {c}"))
    table = render.colour_tables(m["vmin"], m["vmax"], norm, cmap, [c])[0]
    inp = snap["input"]
    over = np.asarray(Image.fromarray(render.plane_image(m["codes"][0], table, 1)).resize((inp.shape[1], inp.shape[0]), Image.NEAREST))
    mixed = (inp.astype(np.float64) * 0.4 + over.astype(np.float64) * 0.6 + 0.5).astype(np.uint8)
    panels.append(Panel("input + map (60%)", mixed, panels[-1].legend))
    if snap.get("top"):
        panels.append(_top_panel(snap, width))
    return panels


def _top_panel(snap: dict, width: int) -> Panel:
    """The channel's top patches from the last scan, each enlarged to one size, with its score."""
    size, gap, text = 96, 8, TEXT_PX + 4
    tops = snap["top"]
    per_row = max(1, (width + gap) // (size + gap))
    rows = -(-len(tops) // per_row)
    canvas = Image.new("RGB", (min(len(tops), per_row) * (size + gap) - gap, rows * (size + text + gap)), "white")
    draw, font = ImageDraw.Draw(canvas), _font(TEXT_PX)
    for k, (patch, score, index) in enumerate(tops):
        x, y = (k % per_row) * (size + gap), (k // per_row) * (size + text + gap)
        scale = size / max(patch.size)
        shown = patch.resize((max(1, round(patch.width * scale)), max(1, round(patch.height * scale))), Image.NEAREST)
        canvas.paste(shown, (x + (size - shown.width) // 2, y + (size - shown.height) // 2))
        draw.text((x, y + size + 2), f"{score:.3g} (#{index})", fill=(60, 60, 60), font=font)
    title = f"what fires channel {snap['channel']}: its top patches of {snap['scanned']} scanned images"
    return Panel(title, np.asarray(canvas), None)


def _filter_panel(snap: dict, c: int, norm: str, cmap: str, width: int) -> Panel:
    """One filter enlarged: a first layer's colour composite and its kernels, else its kernels
    on a near-square grid."""
    p = codec.unpack(snap["filters"])
    w = p["codes"][c - p["first"]]  # (I, kh, kw)
    gap = render.hex_rgb(rules.CMAPS[cmap][2])
    table = render.colour_tables(p["vmin"], p["vmax"], norm, cmap, [c])[0]
    kernels = table[w]  # (I, kh, kw, 3)
    if w.shape[0] == 3 and not p["depthwise"]:
        rgb = render.composite(w[None], p["vmin"][[c]], p["vmax"][[c]], p["bgr"])
        kernels = np.concatenate([rgb, kernels])
    n = len(kernels)
    cols = 4 if n == 4 else int(np.ceil(np.sqrt(n)))
    layout = render.grid_layout(n, w.shape[1], w.shape[2], max(width, 160), cols=cols)
    legend = legend_for(norm, cmap, p["vmin"], p["vmax"], "filters")
    what = "colour composite, then its 3 input kernels" if n == 4 and w.shape[0] == 3 else f"{n} input kernels"
    return Panel(f"filter {c}: {what}", render.draw_grid(kernels, None, layout, gap), legend)


def _wrap(text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` pixels, broken at spaces (a long word stays whole)."""
    lines, line = [], ""
    for word in text.split(" "):
        longer = f"{line} {word}" if line else word
        if line and font.getlength(longer) > width:
            lines.append(line)
            line = word
        else:
            line = longer
    return [*lines, line]


def _compose(title: str, panels: list[Panel], width: int) -> tuple[Image.Image, tuple[int, int, int, int] | None]:
    font, big = _font(TEXT_PX), _font(TITLE_PX)
    placed, x, y, row_h, grid_box = [], MARGIN, 0, 0, None
    for panel in panels:
        pic = Image.fromarray(panel.image)
        legend = _legend_image(panel.legend, pic.width) if panel.legend else None
        w = max(pic.width, legend.width if legend else 0)
        h = TEXT_PX + 6 + pic.height + (legend.height + 8 if legend else 0)
        if x > MARGIN and x + w > MARGIN + width:
            x, y, row_h = MARGIN, y + row_h + 16, 0
        placed.append((x, y, panel, pic, legend))
        x, row_h = x + w + 24, max(row_h, h)
    total_w = max(MARGIN + width, max(px + max(pic.width, lg.width if lg else 0) for px, _, _, pic, lg in placed)) + MARGIN
    lines = _wrap(title, big, total_w - 2 * MARGIN)  # the title never runs off the picture
    top = MARGIN + len(lines) * (TITLE_PX + 4) + 8
    out = Image.new("RGB", (total_w, top + y + row_h + MARGIN), "white")
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((MARGIN, MARGIN + i * (TITLE_PX + 4)), line, fill="black", font=big)
    for px, py, panel, pic, legend in placed:
        py += top
        draw.text((px, py), panel.title, fill=(60, 60, 60), font=font)
        out.paste(pic, (px, py + TEXT_PX + 6))
        if panel.is_grid and grid_box is None:
            grid_box = (px, py + TEXT_PX + 6, pic.width, pic.height)
        if legend:
            out.paste(legend, (px, py + TEXT_PX + 6 + pic.height + 8))
    return out, grid_box


def save_png(snap: dict, path: str | Path, *, width: int = 900) -> Path:
    """Write the view described by ``snap`` (from the widget) to ``path``; return the path."""
    info = snap["info"]
    if snap["view"] == "maps":
        panels, what = _maps_panels(snap, width), "feature maps"
    elif snap["view"] == "filters":
        O = info.weight_shape[0]
        rows = _page_items(O, snap["page"], snap["page_size"])
        panels, what = [_filters_panel(snap, width, rows, f"filters {rows[0]}-{rows[-1]} of {O}")], "filters"
    else:
        panels, what = _side_panels(snap, width), f"channel {snap['channel']}"
    title = f"{snap['model']}: {info.name} ({info.type}, output {'x'.join(map(str, info.out_shape))}), {what}"
    image, grid_box = _compose(title, panels, width)
    meta = PngImagePlugin.PngInfo()
    if grid_box is not None:
        meta.add_text("fmwidget:grid", json.dumps(dict(zip(("x", "y", "width", "height"), grid_box))))
    target = Path(path)
    image.save(target, pnginfo=meta)
    return target
