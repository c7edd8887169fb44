"""fmwidget performance benchmark: the widget against the plain forward pass and today's recipes.

Times, in one run and interleaved (so that load on a shared machine hits both sides alike):

* ``forward``: the plain forward pass (``torch.no_grad()``, eval mode);
* ``first_view``: ``FeatureMapExplorer(model, x)``: the capture (every offered layer encoded in
  its hook) and the first answer (the first layer's grid of codes, base64), ready to display;
* per layer of about 64, 256 and 2048 channels: ``answer`` (``w.layer = name`` returns with
  the layer's grid in ``_maps``; what Python does for a layer the browser has not seen),
  ``payload`` (the JSON of that update as the comm carries it), ``codes_per_pixel`` (bytes of
  codes per tile pixel before base64: at most 1), and the two recipes people use today for the
  same channels of the same activation: ``make_grid`` (torchvision ``make_grid`` + PIL PNG,
  what ``save_image`` does) and ``matplotlib`` (a ``plt.subplots`` grid, ``imshow`` per channel,
  ``savefig`` PNG; only for the 256-channel layer);
* ``export``: ``to_html`` of the whole model, its file size and its bytes of codes;
* ``memory``: peak resident memory of a subprocess that builds the explorer and visits the
  picked layers, over the peak of the same subprocess doing a plain forward pass; and the bytes
  kept for the views against the float32 size of every offered activation.

The browser-side figures (repaint from the cache, a layer not yet seen against a trivial
widget's round trip, the cache bound) come from the real-browser test
(``tests/e2e/test_widget_browser.py``, ``tests/e2e/artifacts/timings.json``).

Usage::

    python benchmarks/bench.py                  # all cases, torch's default thread count
    python benchmarks/bench.py --threads 1      # the same at one thread
    python benchmarks/bench.py --quick --out tmp.json   # resnet18 at 128 px, one repeat (CI)

Weights are random (``weights=None``); the input is the bundled photo, preprocessed to the size.
Only what the run measured is reported; targets print PASS or MISS.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import fmwidget  # noqa: F401
except ImportError:  # running from a checkout without ``pip install -e .``
    sys.path.insert(0, str(ROOT / "src"))

import numpy as np
import torch
import torchvision

from fmwidget import FeatureMapExplorer, imagenet_transform, sample_image
from fmwidget.codec import unpack
from fmwidget.preprocess import model_input

FULL_CASES = [
    ("alexnet", 224), ("vgg16", 224), ("resnet50", 224),
    ("efficientnet_b0", 224), ("convnext_tiny", 224), ("resnet50", 1024),
]
QUICK_CASES = [("resnet18", 128)]
CHANNELS = (64, 256, 2048)
TARGETS = {
    "first_view_vs_forward": 1.5,  # at most, ratio
    "codes_per_tile_pixel": 1.0,  # at most, bytes before base64
    "answer_256x56x56_vs_make_grid": 3.0,  # at least, speed-up
    "answer_256x56x56_vs_matplotlib": 150.0,  # at least, speed-up
    "kept_vs_float32": 0.25,  # at most, ratio (plus the per-channel ranges: see the table)
    "memory_over_forward_1024_bytes": 2 * 10**9,  # at most, resnet50 at 1024 px
}


# ---------------------------------------------------------------- inputs and helpers


def make_model(name: str) -> torch.nn.Module:
    """A torchvision model with random (seeded) weights, in eval mode."""
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None).eval()


def make_input(size: int) -> torch.Tensor:
    """The bundled photo, resized and centre-cropped to ``size`` px, as a (1, 3, S, S) tensor."""
    return model_input(sample_image(), imagenet_transform(resize=round(size * 256 / 224), crop=size))


def timed(fn) -> float:
    """Milliseconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def pick_layers(layers) -> dict[int, str]:
    """For each wanted channel count, the offered layer with that many channels (largest maps
    first), or else the one with the nearest count."""
    picks = {}
    for want in CHANNELS:
        def rank(info, want=want):
            c, h, w = info.out_shape
            return (abs(math.log(c / want)), -h * w)
        picks[want] = min(layers, key=rank).name
    return picks


class Layer:
    def __init__(self, name: str, out_shape: tuple) -> None:
        self.name, self.out_shape = name, out_shape


def forward(model, x) -> None:
    with torch.no_grad():
        model(x)


def grid_state(w: FeatureMapExplorer) -> dict:
    """The maps grid the browser holds now, as the comm carries it (public ipywidgets state)."""
    return w.get_state("_maps")["_maps"]


def answer(w: FeatureMapExplorer, name: str) -> float:
    """ms for ``w.layer = name`` from another layer: the new layer's grid built and set."""
    names = w.layer_names
    w.layer = names[0] if names[0] != name else names[-1]
    ms = timed(lambda: setattr(w, "layer", name))
    assert grid_state(w)["layer"] == name, "no answer"
    return ms


def make_grid_png(maps: torch.Tensor, cols: int) -> bytes:
    """What ``torchvision.utils.save_image(maps, f, nrow=cols, normalize=True, scale_each=True)``
    does: make_grid, to uint8, PIL PNG."""
    from PIL import Image
    from torchvision.utils import make_grid

    grid = make_grid(maps.unsqueeze(1), nrow=cols, padding=1, normalize=True, scale_each=True)
    arr = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def matplotlib_png(maps: torch.Tensor, rows: int, cols: int) -> bytes:
    """The usual notebook recipe: a subplot per channel, imshow, savefig PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.5 * rows))
    for i, ax in enumerate(np.atleast_1d(axes).flat):
        if i < len(maps):
            ax.imshow(maps[i].numpy(), cmap="viridis")
        ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------- one case


def row(name, values, unit="ms", **extra) -> dict:
    return {"row": name, "unit": unit, "median": statistics.median(values), "runs": values, **extra}


def run_case(model_name: str, size: int, args) -> dict:
    model, x = make_model(model_name), make_input(size)
    forward(model, x)  # warm-up: first-call allocations and kernel selection
    FeatureMapExplorer(model, x).close()
    load_before = load()
    fwd, first = [], []
    for _ in range(args.repeats):
        fwd.append(timed(lambda: forward(model, x)))
        holder = []
        first.append(timed(lambda h=holder: h.append(FeatureMapExplorer(model, x))))
        assert grid_state(holder[0])["codes"], "no first answer"
        holder[0].close()
    f_med = statistics.median(fwd)
    rows = [row("forward", fwd), row("first_view", first, ratio_forward=statistics.median(first) / f_med)]

    w = FeatureMapExplorer(model, x)
    infos = [Layer(d["name"], tuple(d["out_shape"])) for d in w.get_state("_layers")["_layers"]]
    offered = sum(4 * math.prod(info.out_shape) for info in infos)
    picks = pick_layers(infos)
    for want, name in picks.items():
        info = next(i for i in infos if i.name == name)
        act = w.activation(name)
        tag = {"channels": want, "layer": name, "shape": list(info.out_shape)}
        sw, mg, mp = [], [], []
        # matplotlib draws a subplot per channel: only for the 256-channel layer (the target's),
        # and for the first one in --quick (2048 subplots take minutes a run)
        mpl_n = args.mpl_repeats if want == (CHANNELS[0] if args.quick else 256) else 0
        for r in range(args.repeats):
            sw.append(answer(w, name))
        grid = grid_state(w)
        p = unpack(grid)
        n, th, tw = p["shape"]
        message = len(json.dumps({"method": "update", "state": {"_maps": grid, "layer": name}}))
        maps = act[p["first"] : p["first"] + n]
        cols = math.ceil(math.sqrt(n))
        for r in range(args.repeats):
            mg.append(timed(lambda m=maps: make_grid_png(m, cols)))
            if r < mpl_n:
                mp.append(timed(lambda m=maps: matplotlib_png(m, math.ceil(n / cols), cols)))
        sw_med = statistics.median(sw)
        rows += [
            row("answer", sw, **tag, tiles=n),
            row("payload", [float(message)], unit="bytes", **tag, codes=int(p["codes"].size),
                codes_per_pixel=p["codes"].size / (n * th * tw)),
            row("make_grid", mg, **tag, speedup=statistics.median(mg) / sw_med),
        ]
        if mp:
            rows.append(row("matplotlib", mp, **tag, speedup=statistics.median(mp) / sw_med))
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "export.html"
        ms = timed(lambda: w.to_html(page))
        rows.append(row("export", [ms], file_bytes=page.stat().st_size, codes_bytes=export_codes(page)))
    cap = w._capture()  # what the capture holds: codes plus exact ranges
    nbytes = cap.nbytes
    codes_bytes = sum(cap.codes(name).codes.numel() for name in cap.names)
    w.close()
    mem = memory(model_name, size, list(dict.fromkeys(picks.values())), args.threads)
    mem.update(kept_bytes=nbytes, float32_bytes=offered, kept_ratio=nbytes / offered, codes_bytes=codes_bytes)
    return {
        "model": model_name, "size": size, "layers": len(infos), "rows": rows,
        "memory": mem, "load": [load_before, load()],
    }


def export_codes(page: Path) -> int:
    """Bytes of codes in an exported page's bundle (every grid's ``shape`` product)."""
    text = page.read_text(encoding="utf-8")
    start = text.index('<script type="application/vnd.jupyter.widget-state+json">') + len(
        '<script type="application/vnd.jupyter.widget-state+json">')
    state = json.loads(text[start : text.index("</script>", start)].replace("<\\/", "</"))
    total = 0
    for entry in state["state"].values():
        for p in entry["state"].get("_bundle", []):
            total += math.prod(p["shape"])
    return total


# ---------------------------------------------------------------- memory (subprocesses)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> str:
    """Restart the peak-RSS high-water mark where the OS allows it (Linux: clear_refs 5).

    Without it the peak would be the ``import torch`` spike, which hides small differences.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM"
    except OSError:
        return "ru_maxrss"


def peak_rss(method: str) -> int:
    """Peak resident set size of this process in bytes (since :func:`reset_peak` for VmHWM)."""
    if method == "VmHWM":
        return _status_kb("VmHWM") * 1024
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb if sys.platform == "darwin" else kb * 1024
    except ImportError:  # Windows
        import psutil

        return psutil.Process().memory_info().peak_wset


def memory_child(model_name: str, size: int, mode: str, layers: list[str]) -> None:
    """Run in a fresh subprocess: a plain forward, or the explorer plus the layer switches."""
    model, x = make_model(model_name), make_input(size)
    method = reset_peak()
    before = (_status_kb("VmRSS") or 0) * 1024
    if mode == "forward":
        forward(model, x)
    else:
        w = FeatureMapExplorer(model, x)
        for name in layers:
            w.layer = name
    print(json.dumps({"peak": peak_rss(method), "before": before, "method": method}))


def memory(model_name: str, size: int, layers: list[str], threads: int) -> dict:
    """Peak RSS of the explorer and of a plain forward, each in its own fresh subprocess, one
    after the other (so that they do not share the cores)."""
    out = {}
    for mode in ("forward", "explorer"):
        cmd = [sys.executable, __file__, "--child-memory", model_name, str(size), mode,
               ",".join(layers), "--threads", str(threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise RuntimeError(f"memory subprocess failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "forward_peak": out["forward"]["peak"], "explorer_peak": out["explorer"]["peak"],
        "model_rss": out["forward"]["before"], "method": out["forward"]["method"],
        "over_forward": out["explorer"]["peak"] - out["forward"]["peak"],
    }


# ---------------------------------------------------------------- targets and report


def find(case, name, channels=None):
    for r in case["rows"]:
        if r["row"] == name and (channels is None or r.get("channels") == channels):
            return r
    return None


def targets(cases) -> list[dict]:
    """Every target checked against what this run measured."""
    out, T = [], TARGETS

    def add(name, case, measured, limit, ok):
        out.append({"target": name, "case": f"{case['model']}@{case['size']}", "measured": measured,
                    "limit": limit, "pass": bool(ok)})

    for c in cases:
        ratio = find(c, "first_view")["ratio_forward"]
        add("first_view_vs_forward", c, ratio, T["first_view_vs_forward"], ratio <= T["first_view_vs_forward"])
        worst = max(r["codes_per_pixel"] for r in c["rows"] if r["row"] == "payload")
        add("codes_per_tile_pixel", c, worst, T["codes_per_tile_pixel"], worst <= T["codes_per_tile_pixel"])
        sw = find(c, "answer", 256)
        if sw and sw["shape"] == [256, 56, 56]:
            mg, mp = find(c, "make_grid", 256), find(c, "matplotlib", 256)
            lim = T["answer_256x56x56_vs_make_grid"]
            add("answer_256x56x56_vs_make_grid", c, mg["speedup"], lim, mg["speedup"] >= lim)
            if mp:
                lim = T["answer_256x56x56_vs_matplotlib"]
                add("answer_256x56x56_vs_matplotlib", c, mp["speedup"], lim, mp["speedup"] >= lim)
        m = c["memory"]
        # the codes: one byte per float32 value; the exact per-channel ranges (8 bytes a
        # channel) come on top and are in the table's "kept" figure
        codes = m["codes_bytes"] / m["float32_bytes"]
        add("kept_vs_float32", c, codes, T["kept_vs_float32"], codes <= T["kept_vs_float32"])
        if c["model"] == "resnet50" and c["size"] == 1024:
            over = m["over_forward"]
            lim = T["memory_over_forward_1024_bytes"]
            add("memory_over_forward_1024_bytes", c, over, lim, over <= lim)
    return out


def fmt(r) -> str:
    v = r["median"]
    return f"{v / 1000:8.1f} KB" if r["unit"] == "bytes" else f"{v:8.2f} ms"


def table(cases, checks, meta) -> str:
    lines = [(f"fmwidget benchmark  torch {meta['torch']}  threads={meta['threads']}  "
              f"repeats={meta['repeats']} (matplotlib {meta['mpl_repeats']})  cpus={meta['cpus']}")]
    for c in cases:
        lo, hi = c["load"]
        lines += ["", f"{c['model']} @ {c['size']} px  ({c['layers']} conv layers, load {lo:.1f} -> {hi:.1f})",
                  f"  {'row':<12}{'layer':<24}{'shape':<14}{'median':>12}  note"]
        for r in c["rows"]:
            shape = "x".join(map(str, r.get("shape", []))) or "-"
            note = ""
            if "ratio_forward" in r:
                note = f"{r['ratio_forward']:.2f}x forward"
            elif "speedup" in r:
                note = f"the answer is {r['speedup']:.1f}x faster"
            elif r["row"] == "payload":
                note = f"{r['codes'] / 1000:.1f} KB of codes, {r['codes_per_pixel']:.3f} B per tile pixel"
            elif r["row"] == "export":
                note = f"file {r['file_bytes'] / 2**20:.1f} MiB, {r['codes_bytes'] / 2**20:.1f} MiB of codes"
            lines.append(f"  {r['row']:<12}{r.get('layer', '-'):<24}{shape:<14}{fmt(r):>12}  {note}")
        m = c["memory"]
        lines.append(f"  memory: peak {m['explorer_peak'] / 2**20:.0f} MiB vs forward {m['forward_peak'] / 2**20:.0f} "
                     f"MiB: +{m['over_forward'] / 2**20:.0f} MiB; kept {m['kept_bytes'] / 2**20:.1f} MiB = "
                     f"{m['kept_ratio']:.4f} of float32 {m['float32_bytes'] / 2**20:.1f} MiB")
    lines += ["", "targets"]
    for t in checks:
        lines.append(f"  {'PASS' if t['pass'] else 'MISS'}  {t['target']:<32}{t['case']:<20} "
                     f"measured {t['measured']:.4g}  (limit {t['limit']:g})")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="resnet18 at 128 px, one repeat (CI smoke)")
    p.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/bench-<time>.json)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--mpl-repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's default)")
    p.add_argument("--cases", help="comma list of model@size, e.g. resnet50@224,alexnet@224")
    p.add_argument("--child-memory", nargs=4, metavar=("MODEL", "SIZE", "MODE", "LAYERS"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.child_memory:
        model_name, size, mode, layers = args.child_memory
        memory_child(model_name, int(size), mode, layers.split(","))
        return 0
    cases = QUICK_CASES if args.quick else FULL_CASES
    if args.cases:
        cases = [(c.split("@")[0], int(c.split("@")[1])) for c in args.cases.split(",")]
    if args.quick:
        args.repeats, args.mpl_repeats = 1, 1
    meta = {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "repeats": args.repeats,
            "mpl_repeats": args.mpl_repeats, "quick": args.quick, "load_start": load()}
    make_grid_png(torch.rand(4, 8, 8), 2)  # warm-up: imports and first-call costs, untimed
    matplotlib_png(torch.rand(4, 8, 8), 2, 2)
    results = []
    for model_name, size in cases:
        print(f"... {model_name} @ {size} px (load {load():.1f})", file=sys.stderr, flush=True)
        results.append(run_case(model_name, size, args))
    checks = targets(results)
    meta["load_end"] = load()
    print(table(results, checks, meta))
    out = args.out or ROOT / "benchmarks" / "results" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "cases": results, "targets": checks}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
