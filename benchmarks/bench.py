"""fmwidget performance benchmark: our views against the plain forward pass and today's recipes.

Times, in one run and interleaved (so that load on a shared machine hits both sides alike):

* ``forward``: the plain forward pass (``torch.no_grad()``, eval mode);
* ``first_view``: ``FeatureMapExplorer(model, x)`` up to its first picture; ``all_ready``: the
  same until every layer is compacted (the capture finishes that in the background);
* per layer of about 64, 256 and 2048 channels: ``switch`` (``w.layer = name`` returns with
  ``w._grid`` set, nothing cached), ``prefetched`` (the neighbour the widget prefetched),
  ``cached`` (a revisit), ``payload`` (``len(w._grid)`` + the metadata JSON), and the two
  recipes people use today for the same channels of the same captured activation:
  ``make_grid`` (torchvision ``make_grid`` + PIL PNG, what ``save_image`` does) and
  ``matplotlib`` (a ``plt.subplots`` grid, ``imshow`` per channel, ``savefig`` PNG);
* ``step_bytes`` / ``jump_bytes``: every byte sent to an attached page per layer update
  (state, and the picture sent ahead for the next move), stepping to the next layer and
  jumping a third of the layers;
* ``memory``: peak resident memory of a subprocess that builds the explorer, over the peak of
  the same subprocess doing a plain forward pass; and ``Capture.nbytes`` against the float32
  size of every offered activation.

Usage::

    python benchmarks/bench.py                 # all cases, table + benchmarks/results/*.json
    python benchmarks/bench.py --quick --out tmp.json   # resnet18 at 128 px, one repeat (CI)

Weights are random (``weights=None``); the input is the bundled photo, preprocessed to the size.
Only what the run measured is reported; targets print PASS or MISS.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
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
from fmwidget.images import prepare_input

FULL_CASES = [
    ("alexnet", 224), ("vgg16", 224), ("resnet50", 224),
    ("efficientnet_b0", 224), ("convnext_tiny", 224), ("resnet50", 1024),
]
QUICK_CASES = [("resnet18", 128)]
CHANNELS = (64, 256, 2048)
TARGETS = {
    "first_view_vs_forward": 1.3,  # at most, ratio
    "switch_256x56x56_vs_make_grid": 3.0,  # at least, speed-up
    "switch_256x56x56_vs_matplotlib": 150.0,  # at least, speed-up
    "prefetched_or_cached_ms": 2.0,  # below, ms
    "payload_bytes_224": 300_000,  # at most, bytes per layer update
    "kept_vs_float32": 0.5,  # at most, ratio
    "memory_over_forward_1024_bytes": 2 * 10**9,  # at most, resnet50 at 1024 px
}


# ---------------------------------------------------------------- inputs and helpers


def make_model(name: str) -> torch.nn.Module:
    """A torchvision model with random (seeded) weights, in eval mode."""
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None).eval()


def make_input(size: int) -> torch.Tensor:
    """The bundled photo, resized and centre-cropped to ``size`` px, as a (1, 3, S, S) tensor."""
    x, _ = prepare_input(sample_image(), imagenet_transform(resize=round(size * 256 / 224), crop=size))
    return x


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


def settle(w: FeatureMapExplorer) -> None:
    """Let the widget's background work (compaction, prefetch) finish, so it does not steal
    the next timing."""
    w._cap.wait()
    w._cache.wait()


def other_layer(w: FeatureMapExplorer, name: str) -> str:
    names = w.layer_names
    return names[0] if names[0] != name else names[-1]


# ---------------------------------------------------------------- what is timed


def forward(model, x) -> None:
    with torch.no_grad():
        model(x)


def switch_uncached(w: FeatureMapExplorer, name: str) -> float:
    settle(w)
    w.layer = other_layer(w, name)
    settle(w)
    w._cache.clear()
    ms = timed(lambda: setattr(w, "layer", name))
    assert w._grid and w._grid_meta["layer"] == name, "the picture was not ready"
    return ms


def switch_prefetched(w: FeatureMapExplorer, name: str) -> float:
    names = w.layer_names
    i = names.index(name)
    settle(w)
    w._cache.clear()
    w.layer = names[i - 1] if i > 0 else names[i + 1]  # its prefetch covers layer i
    settle(w)
    hits = w._cache.hits
    ms = timed(lambda: setattr(w, "layer", name))
    assert w._cache.hits == hits + 1 and w._grid_meta["layer"] == name, "not prefetched"
    return ms


def switch_cached(w: FeatureMapExplorer, name: str) -> float:
    settle(w)
    w.layer = name
    w.layer = other_layer(w, name)
    settle(w)
    hits = w._cache.hits
    ms = timed(lambda: setattr(w, "layer", name))
    assert w._cache.hits == hits + 1 and w._grid_meta["layer"] == name, "not cached"
    return ms


def payload(w: FeatureMapExplorer) -> int:
    return len(w._grid) + len(json.dumps(w._grid_meta))


def traffic(w: FeatureMapExplorer, steps: int = 10, jumps: int = 5) -> tuple[list[float], list[float]]:
    """Bytes the widget sends to an attached page per layer update, every message counted
    (state updates and pictures sent ahead), as JSON: moving to the next layer, one at a time
    from the first, and jumping a third of the layers at a time."""
    names = w.layer_names
    sent: list[int] = []
    w._send = lambda msg, buffers=None: sent.append(len(json.dumps(msg)))  # what the comm carries
    try:
        w.layer = names[0]
        w._on_custom_msg(w, {"type": "hello"}, [])  # a page has built the model
        settle(w)
        step_bytes, jump_bytes = [], []
        for name in names[1 : steps + 1]:
            sent.clear()
            w.layer = name
            settle(w)
            step_bytes.append(float(sum(sent)))
        at = names.index(w.layer)
        for _ in range(jumps):
            at = (at + max(3, len(names) // 3)) % len(names)
            sent.clear()
            w.layer = names[at]
            settle(w)
            jump_bytes.append(float(sum(sent)))
    finally:
        del w._send  # back to the class's method
    return step_bytes, jump_bytes


def built_and_compacted(model, x) -> FeatureMapExplorer:
    """The explorer with every layer compacted (its first view returns before that)."""
    w = FeatureMapExplorer(model, x)
    w._cap.wait()
    return w


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
    fwd, first, ready = [], [], []
    for _ in range(args.repeats):
        fwd.append(timed(lambda: forward(model, x)))
        holder = []
        first.append(timed(lambda h=holder: h.append(FeatureMapExplorer(model, x))))
        assert holder[0]._grid, "no first picture"
        settle(holder[0])
        holder[0].close()
        # the same, until every layer is compacted (the background work after the first view)
        holder = []
        ready.append(timed(lambda h=holder: h.append(built_and_compacted(model, x))))
        settle(holder[0])
        holder[0].close()
    f_med = statistics.median(fwd)
    rows = [row("forward", fwd), row("first_view", first, ratio_forward=statistics.median(first) / f_med),
            row("all_ready", ready, ratio_forward=statistics.median(ready) / f_med)]

    w = FeatureMapExplorer(model, x)
    cap = w._cap
    offered = sum(4 * math.prod(info.out_shape) for info in cap.layers)
    picks = pick_layers(cap.layers)
    for want, name in picks.items():
        shape = list(cap.info(name).out_shape)
        act = w.activation(name)
        tag = {"channels": want, "layer": name, "shape": shape}
        sw, pf, ca, mg, mp, pay = [], [], [], [], [], []
        mpl_n = args.mpl_repeats if not (args.quick and want != CHANNELS[0]) else 0
        for r in range(args.repeats):
            sw.append(switch_uncached(w, name))
            pay.append(payload(w))
            meta = w._grid_meta
            shown = [c for c in meta["channels"] if c >= 0]
            maps = act[shown]
            pf.append(switch_prefetched(w, name))
            ca.append(switch_cached(w, name))
            settle(w)
            png = []
            mg.append(timed(lambda p=png, m=maps, c=meta["cols"]: p.append(make_grid_png(m, c))))
            if r < mpl_n:
                mp.append(timed(lambda m=maps, r=meta["rows"], c=meta["cols"]: matplotlib_png(m, r, c)))
        sw_med = statistics.median(sw)
        rows += [
            row("switch", sw, **tag, tiles=len(shown)),
            row("prefetched", pf, **tag),
            row("cached", ca, **tag),
            row("make_grid", mg, **tag, speedup=statistics.median(mg) / sw_med,
                payload=len(base64.b64encode(png[-1])) + len("data:image/png;base64,")),
            row("payload", [float(p) for p in pay], unit="bytes", **tag),
        ]
        if mp:
            rows.append(row("matplotlib", mp, **tag, speedup=statistics.median(mp) / sw_med))
    step_bytes, jump_bytes = traffic(w)
    rows += [row("step_bytes", step_bytes, unit="bytes"), row("jump_bytes", jump_bytes, unit="bytes")]
    nbytes = cap.nbytes
    settle(w)
    w.close()
    mem = memory(model_name, size, list(dict.fromkeys(picks.values())), args.threads)
    mem.update(kept_bytes=nbytes, float32_bytes=offered, kept_ratio=nbytes / offered)
    return {
        "model": model_name, "size": size, "layers": len(cap.layers), "rows": rows,
        "memory": mem, "load": [load_before, load()],
    }


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
        settle(w)
    print(json.dumps({"peak": peak_rss(method), "before": before, "method": method}))


def memory(model_name: str, size: int, layers: list[str], threads: int) -> dict:
    """Peak RSS of the explorer and of a plain forward, each in its own fresh subprocess.

    The two run at the same time: each measures only its own peak, and it halves the wait.
    """
    procs = {}
    for mode in ("forward", "explorer"):
        cmd = [sys.executable, __file__, "--child-memory", model_name, str(size), mode,
               ",".join(layers), "--threads", str(threads)]
        procs[mode] = (cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out = {}
    for mode, (cmd, proc) in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"memory subprocess failed ({' '.join(cmd)}):\n{stderr[-2000:]}")
        out[mode] = json.loads(stdout.strip().splitlines()[-1])
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
        for want in CHANNELS:
            sw = find(c, "switch", want)
            if sw["channels"] == 256 and sw["shape"] == [256, 56, 56]:
                mg, mp = find(c, "make_grid", 256), find(c, "matplotlib", 256)
                lim = T["switch_256x56x56_vs_make_grid"]
                add("switch_256x56x56_vs_make_grid", c, mg["speedup"], lim, mg["speedup"] >= lim)
                if mp:
                    lim = T["switch_256x56x56_vs_matplotlib"]
                    add("switch_256x56x56_vs_matplotlib", c, mp["speedup"], lim, mp["speedup"] >= lim)
        fast = max(r["median"] for r in c["rows"] if r["row"] in ("prefetched", "cached"))
        add("prefetched_or_cached_ms", c, fast, T["prefetched_or_cached_ms"], fast < T["prefetched_or_cached_ms"])
        if c["size"] == 224:
            worst = max(r["median"] for r in c["rows"] if r["row"] == "payload")
            add("payload_bytes_224", c, worst, T["payload_bytes_224"], worst <= T["payload_bytes_224"])
            for kind in ("step_bytes", "jump_bytes"):  # with the picture sent ahead
                worst = max(find(c, kind)["runs"])
                add(f"payload_{kind}_224", c, worst, T["payload_bytes_224"], worst <= T["payload_bytes_224"])
        kept = c["memory"]["kept_ratio"]
        add("kept_vs_float32", c, kept, T["kept_vs_float32"], kept <= T["kept_vs_float32"])
        if c["model"] == "resnet50" and c["size"] == 1024:
            over = c["memory"]["over_forward"]
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
                  f"  {'row':<12}{'layer':<24}{'shape':<14}{'median':>12}  ratio"]
        for r in c["rows"]:
            shape = "x".join(map(str, r.get("shape", []))) or "-"
            note = ""
            if "ratio_forward" in r:
                note = f"{r['ratio_forward']:.2f}x forward"
            elif "speedup" in r:
                note = f"switch is {r['speedup']:.1f}x faster"
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
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: steadier on a shared machine; 0 = torch's default)")
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
