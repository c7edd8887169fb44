"""Command line: ``fmwidget demo`` opens the quickstart notebook; ``fmwidget layers`` lists layers.

``fmwidget demo`` works on its own copy of the quickstart notebook, never on the original:
JupyterLab saves outputs into the notebook it opens, and the original is a tracked file of the
repository (or a file inside the installed package).

Where the copy goes
    ``~/fmwidget-demo/quickstart.ipynb`` by default: a folder of its own in your home, where
    JupyterLab opens with the notebook and nothing else. ``--dir PATH`` or the environment
    variable ``FMWIDGET_DEMO_DIR=PATH`` choose another folder (``--dir`` wins). A folder inside
    the fmwidget checkout is refused, so that the demo never shows up in ``git status``.

If the copy is already there
    It is kept as it is: your edits and outputs are never overwritten. ``fmwidget demo --fresh``
    replaces it with a fresh copy and keeps yours as ``quickstart.previous.ipynb`` beside it.

The copy is made from the notebook inside the package (``fmwidget/notebooks/quickstart.ipynb``
in a wheel) or, for an editable install, from the checkout's ``notebooks/quickstart.ipynb``;
that file is only read. ``fmwidget demo --prepare-only`` makes the copy and prints where it is
and the JupyterLab command, without starting JupyterLab.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

NOTEBOOK_NAME = "quickstart.ipynb"
BACKUP_NAME = "quickstart.previous.ipynb"
PACKAGED_NOTEBOOK = Path(__file__).resolve().parent / "notebooks" / NOTEBOOK_NAME
# An editable install (pip install -e .) runs from the checkout: src/fmwidget/ -> the checkout.
CHECKOUT = Path(__file__).resolve().parents[2]
REPO_NOTEBOOK = CHECKOUT / "notebooks" / NOTEBOOK_NAME
DEMO_DIR_ENV = "FMWIDGET_DEMO_DIR"
DEFAULT_DEMO_DIR = "~/fmwidget-demo"
# Said in every message about a folder that cannot be used: the two ways to choose another.
HOW_TO_CHOOSE = (f"choose a writable folder outside the fmwidget checkout with "
                 f"`fmwidget demo --dir PATH` or `{DEMO_DIR_ENV}=PATH`")


class DemoError(Exception):
    """A problem the user can fix; the message says what went wrong and how to fix it."""


@dataclass(frozen=True)
class DemoCopy:
    """The demo's own copy of the quickstart notebook, ready for JupyterLab.

    Attributes
    ----------
    path : Path
        The copy, an absolute path: ``<folder>/quickstart.ipynb``.
    source : Path
        The notebook it was copied from (only ever read).
    state : str
        ``"new"`` (just copied), ``"same"`` (already there, identical to the source),
        ``"kept"`` (already there, different: the user's edits or outputs, left alone) or
        ``"fresh"`` (replaced by ``--fresh``; the old one is ``backup``).
    backup : Path or None
        Where ``--fresh`` moved the user's previous copy, if it replaced one.
    """

    path: Path
    source: Path
    state: str
    backup: Path | None = None

    @property
    def folder(self) -> Path:
        """The folder JupyterLab opens in (its root dir)."""
        return self.path.parent

    def describe(self) -> str:
        """One line for the terminal: where the notebook is and what happened to it."""
        why = {
            "new": "a new copy of fmwidget's quickstart; edit it freely",
            "same": "your copy, same as fmwidget's quickstart",
            "kept": ("your copy, kept as it is because it differs from fmwidget's quickstart; "
                     "`fmwidget demo --fresh` replaces it"),
            "fresh": (f"a fresh copy of fmwidget's quickstart; your previous copy is {self.backup}"
                      if self.backup else "a fresh copy of fmwidget's quickstart"),
        }[self.state]
        return f"Demo notebook: {self.path} ({why})"


def source_notebook() -> Path:
    """The quickstart notebook this installation ships, to copy from (never to write).

    Returns
    -------
    Path
        The packaged notebook of a wheel install, else the checkout's ``notebooks/`` one.

    Raises
    ------
    DemoError
        If neither exists (a broken installation).
    """
    for here in (PACKAGED_NOTEBOOK, REPO_NOTEBOOK):
        if here.is_file():
            return here
    raise DemoError(f"fmwidget demo: the quickstart notebook is missing from this installation "
                    f"(looked for {PACKAGED_NOTEBOOK} and {REPO_NOTEBOOK}); reinstall fmwidget.")


def demo_dir(option: str | None = None, environ: dict[str, str] | None = None) -> tuple[Path, str]:
    """The folder that holds the demo's copy, and which setting chose it.

    Parameters
    ----------
    option : str or None
        The ``--dir`` value; it wins over the environment.
    environ : dict or None
        Where to read ``FMWIDGET_DEMO_DIR`` (default: ``os.environ``); empty counts as unset.

    Returns
    -------
    folder : Path
        Absolute, ``~`` expanded; it may not exist yet.
    origin : str
        ``"--dir"``, ``"FMWIDGET_DEMO_DIR"`` or ``"the default"``, for messages.
    """
    environ = os.environ if environ is None else environ
    if option:
        raw, origin = option, "--dir"
    elif environ.get(DEMO_DIR_ENV):
        raw, origin = environ[DEMO_DIR_ENV], DEMO_DIR_ENV
    else:
        raw, origin = DEFAULT_DEMO_DIR, "the default"
    # Absolute and resolved: the printed path must be one the user can paste anywhere, and the
    # "inside the checkout" test below must see through symlinks.
    return Path(raw).expanduser().resolve(), origin


def _inside_checkout(folder: Path) -> bool:
    # Only an editable install has a checkout (its notebook sits there); a wheel has none.
    return REPO_NOTEBOOK.is_file() and folder.is_relative_to(CHECKOUT)


def prepare_copy(folder: Path, *, fresh: bool = False, source: Path | None = None,
                 origin: str = "--dir") -> DemoCopy:
    """Make sure ``folder`` holds the demo's copy of the quickstart notebook.

    A missing copy is written; an existing one is kept unless ``fresh`` (then it is moved to
    ``quickstart.previous.ipynb`` first). The source is only read.

    Parameters
    ----------
    folder : Path
        Where the copy goes (created if missing). Must be outside the fmwidget checkout.
    fresh : bool
        Replace an existing copy that differs from the source.
    source : Path or None
        The notebook to copy (default: :func:`source_notebook`).
    origin : str
        Which setting chose ``folder`` (see :func:`demo_dir`), named in error messages.

    Returns
    -------
    DemoCopy
        The copy's path and what was done.

    Raises
    ------
    DemoError
        If ``folder`` is inside the checkout, cannot be created or written, or the source is
        missing; the message names ``--dir`` and ``FMWIDGET_DEMO_DIR``.
    """
    source = source_notebook() if source is None else source
    folder = Path(folder).expanduser().resolve()
    if _inside_checkout(folder):
        raise DemoError(f"fmwidget demo: {folder} (from {origin}) is inside the fmwidget checkout "
                        f"{CHECKOUT}; the demo's notebook must not be written into the repository. "
                        f"Please {HOW_TO_CHOOSE} (default: {DEFAULT_DEMO_DIR}).")
    target = folder / NOTEBOOK_NAME
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise DemoError(f"fmwidget demo: cannot read the quickstart notebook {source}: "
                        f"{exc.strerror or exc}; reinstall fmwidget.") from exc
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if target.is_file():
            if target.read_bytes() == data:
                return DemoCopy(target, source, "same")
            if not fresh:
                return DemoCopy(target, source, "kept")
        elif target.exists():
            raise IsADirectoryError(f"{target} exists and is not a file")
        # Write beside the target, then rename: an interrupted copy never leaves a half
        # notebook where the user's one was.
        tmp = folder / f".{NOTEBOOK_NAME}.{os.getpid()}.tmp"
        try:
            tmp.write_bytes(data)
            backup = None
            if target.exists():
                backup = folder / BACKUP_NAME
                os.replace(target, backup)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise DemoError(f"fmwidget demo: cannot write the demo notebook to {target} (from "
                        f"{origin}): {exc.strerror or exc}. Please {HOW_TO_CHOOSE}, or make "
                        f"{folder} writable.") from exc
    return DemoCopy(target, source, "fresh" if fresh and backup else "new", backup)


def jupyterlab_command(copy: DemoCopy, args: argparse.Namespace) -> list[str]:
    """The command that starts JupyterLab on ``copy`` with ``copy.folder`` as its root dir."""
    cmd = [sys.executable, "-m", "jupyterlab", copy.path.name, f"--ServerApp.root_dir={copy.folder}"]
    cmd += args.jupyter_args
    if args.no_browser:
        cmd.append("--no-browser")
    if args.port:
        cmd.append(f"--port={args.port}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and Colab-like machines run as root
    return cmd


def demo(args: argparse.Namespace) -> int:
    """``fmwidget demo``: copy the quickstart (see the module docstring), then run JupyterLab."""
    if not args.prepare_only:
        try:
            import jupyterlab  # noqa: F401
        except ImportError:
            print("fmwidget demo needs JupyterLab: pip install 'fmwidget[demo]' "
                  "(or pip install jupyterlab)", file=sys.stderr)
            return 1
    try:
        folder, origin = demo_dir(args.dir)
        copy = prepare_copy(folder, fresh=args.fresh, origin=origin)
    except DemoError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(copy.describe(), flush=True)
    cmd = jupyterlab_command(copy, args)
    if args.prepare_only:
        print("JupyterLab command (not started):", " ".join(cmd), flush=True)
        return 0
    print("Starting JupyterLab:", " ".join(cmd), flush=True)
    if os.name == "posix":
        # Become the server (no child left behind): Ctrl+C and SIGTERM reach JupyterLab itself.
        os.chdir(copy.folder)
        os.execv(sys.executable, cmd)
    return subprocess.call(cmd, cwd=copy.folder)


def layers(args: argparse.Namespace) -> int:
    """``fmwidget layers``: print a model's layer table on the sample image."""
    from . import FeatureMapExplorer, models

    # A ResolvedModel carries its transform and labels; a name is resolved by the widget.
    model = models.demo_model() if args.model == "default" else args.model
    name = model.name if args.model == "default" else args.model
    with FeatureMapExplorer(model, models.sample_image(), layers=args.layers) as w:
        print(f"{name}: input {tuple(w.input_tensor.shape)}, {len(w.layer_names)} layers")
        print(f"{'layer':40s} {'type':22s} {'output (C, H, W)':20s} weight")
        for info in w._capture().layers:
            weight = "x".join(map(str, info.weight_shape)) if info.weight_shape else "-"
            print(f"{info.name:40s} {info.type:22s} {info.out_shape!s:20s} {weight}")
    return 0


DEMO_DESCRIPTION = f"""\
Open fmwidget's quickstart notebook in JupyterLab, on a copy of its own.

The copy is {DEFAULT_DEMO_DIR}/{NOTEBOOK_NAME} unless --dir PATH or {DEMO_DIR_ENV}=PATH
names another folder (--dir wins); JupyterLab opens in that folder. A folder inside the
fmwidget checkout is refused. An existing copy is kept as it is (your edits and outputs);
--fresh replaces it and keeps yours as {BACKUP_NAME} beside it. The notebook
in the package or checkout is only read. Options JupyterLab knows (for example
--IdentityProvider.token=...) are passed on to it."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; ``argv`` defaults to ``sys.argv[1:]``. Returns the exit status."""
    parser = argparse.ArgumentParser(prog="fmwidget", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    # No abbreviations: unknown options go to JupyterLab, and a prefix of one of ours (--d,
    # --f) must reach it rather than be taken as ours.
    p_demo = sub.add_parser("demo", help=f"open a copy of the quickstart notebook ({DEFAULT_DEMO_DIR}) "
                                         "in JupyterLab",
                            description=DEMO_DESCRIPTION, allow_abbrev=False,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p_demo.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p_demo.add_argument("--port", type=int, default=None)
    p_demo.add_argument("--dir", metavar="PATH", default=None,
                        help=f"folder for the notebook's copy (default: ${DEMO_DIR_ENV}, "
                             f"else {DEFAULT_DEMO_DIR}); created if missing")
    p_demo.add_argument("--fresh", action="store_true",
                        help=f"replace an existing copy (yours is kept as {BACKUP_NAME})")
    p_demo.add_argument("--prepare-only", action="store_true",
                        help="make the copy and print where it is and the JupyterLab command, "
                             "without starting JupyterLab")
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
