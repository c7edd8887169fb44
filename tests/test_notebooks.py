"""Run every notebook in notebooks/ top to bottom in a real Jupyter kernel, as a user would.

Each notebook's cells assert on the API (shapes, values, predictions); on top of that, a check
cell appended here (never written to the file) asserts that every widget the notebook made
ended ready, without an error, with a picture to show.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

WIDGETS_CHECK = """
from fmwidget import FeatureMapExplorer as _FME
_widgets = [v for v in list(globals().values()) if isinstance(v, _FME)]
assert _widgets, "the notebook made no FeatureMapExplorer"
for _w in _widgets:
    _s = _w.get_state()  # what the browser gets
    assert _s["_error"] == "", (_w.layer, _w.view, _s["_error"])
    assert _s["_status"] == "ready", (_w.layer, _s["_status"])
    _answer = _s[{"maps": "_maps", "filters": "_filters", "side": "_map"}[_w.view]]
    assert _answer.get("layer") == _w.layer and _answer.get("codes"), (_w.layer, _w.view)
    assert _w.layer in _w.layer_names
print(len(_widgets), "widgets ready")
"""


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    # quickstart is what `fmwidget demo` opens and what the wheel ships.
    assert "quickstart.ipynb" in names, names
    assert len(names) >= 2, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: clear the outputs before committing"
            assert cell.execution_count is None, f"{path.name}: clear the execution counts"


def _kernel_env(monkeypatch) -> None:
    # The kernel inherits os.environ: without an installed fmwidget, point it at the checkout.
    if importlib.util.find_spec("fmwidget") is None:
        old = os.environ.get("PYTHONPATH")
        src = str(ROOT / "src")
        monkeypatch.setenv("PYTHONPATH", src + (os.pathsep + old if old else ""))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch):
    _kernel_env(monkeypatch)
    nb = nbformat.read(path, as_version=4)
    n_cells = len(nb.cells)
    nb.cells.append(nbformat.v4.new_code_cell(WIDGETS_CHECK))
    client = NotebookClient(
        nb,
        timeout=300,
        startup_timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error

    shown = [
        o for c in nb.cells[:n_cells] if c.cell_type == "code"
        for o in c.outputs if WIDGET_MIME in o.get("data", {})
    ]
    assert shown, f"{path.name} displays no widget"
    last = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert "widgets ready" in last, last
