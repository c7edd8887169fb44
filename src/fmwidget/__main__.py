"""Command line: ``fmwidget demo`` opens the quickstart notebook; ``fmwidget layers`` lists layers."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGED_NOTEBOOK = Path(__file__).resolve().parent / "notebooks" / "quickstart.ipynb"
# An editable install (pip install -e .) runs from the checkout: use its notebook in place.
REPO_NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def _quickstart() -> Path:
    """The repository's notebooks/quickstart.ipynb, or a copy of the packaged one in the CWD."""
    for here in (Path.cwd() / "notebooks" / "quickstart.ipynb", REPO_NOTEBOOK):
        if here.is_file():
            return here
    target = Path.cwd() / "fmwidget-quickstart.ipynb"
    if not target.exists():
        shutil.copyfile(PACKAGED_NOTEBOOK, target)
    return target


def demo(args: argparse.Namespace) -> int:
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        print("fmwidget demo needs JupyterLab: pip install 'fmwidget[demo]' (or pip install jupyterlab)")
        return 1
    notebook = _quickstart()
    cmd = [sys.executable, "-m", "jupyterlab", str(notebook.name), f"--ServerApp.root_dir={notebook.parent}"]
    cmd += args.jupyter_args
    if args.no_browser:
        cmd.append("--no-browser")
    if args.port:
        cmd.append(f"--port={args.port}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and Colab-like machines run as root
    print("Opening", notebook, "in JupyterLab:", " ".join(cmd), flush=True)
    if os.name == "posix":
        # Become the server (no child left behind): Ctrl+C and SIGTERM reach JupyterLab itself.
        os.chdir(notebook.parent)
        os.execv(sys.executable, cmd)
    return subprocess.call(cmd, cwd=notebook.parent)


def layers(args: argparse.Namespace) -> int:
    from . import FeatureMapExplorer, models

    # A ResolvedModel carries its transform and labels; a name is resolved by the widget.
    model = models.demo_model() if args.model == "default" else args.model
    name = model.name if args.model == "default" else args.model
    with FeatureMapExplorer(model, models.sample_image(), layers=args.layers) as w:
        print(f"{name}: input {tuple(w.input_tensor.shape)}, {len(w.layer_names)} layers")
        print(f"{'layer':40s} {'type':22s} {'output (C, H, W)':20s} weight")
        for info in w._capture().layers:
            weight = "x".join(map(str, info.weight_shape)) if info.weight_shape else "-"
            print(f"{info.name:40s} {info.type:22s} {str(info.out_shape):20s} {weight}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fmwidget", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    p_demo = sub.add_parser("demo", help="open the quickstart notebook in JupyterLab")
    p_demo.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p_demo.add_argument("--port", type=int, default=None)
    p_demo.set_defaults(func=demo)
    p_layers = sub.add_parser("layers", help="print the layer table of a model on the sample image")
    p_layers.add_argument("model", nargs="?", default="default", help="torchvision name (default: the demo model)")
    p_layers.add_argument("--layers", default=None, help="'all' for every module with a 4-D output")
    p_layers.set_defaults(func=layers)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["demo", *argv]  # plain `fmwidget` (or `python -m fmwidget`) opens the demo
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "demo":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.jupyter_args = extra  # the demo passes the rest to JupyterLab, e.g. --IdentityProvider.token=...
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
