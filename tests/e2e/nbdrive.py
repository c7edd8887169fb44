"""Driving a notebook in a real Jupyter page: write it, run it, read the kernel's side.

The kernel side is read from a JSON file that an observer in the notebook writes (the widget's
selection, error and what it last answered), so the tests check Python without reaching into
the page's kernel connection.
"""
import json
import textwrap
import time

import nbformat

try:
    from playwright.sync_api import expect
except ImportError:  # the `chromium` fixture skips with the reason
    expect = None

KERNEL_TIMEOUT_S = 60
RENDER_TIMEOUT_MS = 120_000  # kernel start + torch import + the model + one forward pass
STATE_FILE = "widget_state.json"

# An observer that writes the widget's kernel-side state to STATE_FILE (atomically).
OBSERVER = textwrap.dedent(f"""\
    import json as _json, os as _os, pathlib as _pathlib

    def _watch(w, path={STATE_FILE!r}):
        def dump(change=None):
            s = w.get_state()
            answers = {{k: {{f: s[k].get(f) for f in ("kind", "layer", "first", "shape", "version")}}
                       for k in ("_maps", "_filters", "_map") if s.get(k)}}
            state = {{k: getattr(w, k) for k in ("layer", "channel", "view", "norm", "cmap", "page", "page_size",
                                                "image_index", "compare", "sort")}}
            state.update(error=s["_error"], status=s["_status"], answers=answers, scan=s["_scan"],
                         compared=sorted(k for k in s["_compare"] if k in ("maps", "diff", "map", "map_diff")),
                         images=[d["label"] for d in s["_images"]], ranking=s["_ranking"].get("by"),
                         top=len(s["_top"].get("items", [])),
                         layers=[{{"name": d["name"], "out_shape": d["out_shape"]}} for d in s["_layers"]])
            tmp = _pathlib.Path(path + ".tmp")
            tmp.write_text(_json.dumps(state))
            _os.replace(tmp, path)
        w.observe(dump, names=["layer", "channel", "view", "norm", "cmap", "page", "page_size", "image_index",
                               "compare", "sort", "_maps", "_filters", "_map", "_compare", "_ranking",
                               "_images", "_scan", "_top", "_error", "_status"])
        dump()
""")

IDLE_JS = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle'; }"""
FIRST_OUTCOME_JS = """() => !!document.querySelector('.fmw-root canvas.fmw-grid[data-draws]')
  || [...document.querySelectorAll('.jp-OutputArea-output')].some(
       (o) => /javascript error|Traceback/i.test(o.textContent))"""


def write_notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)


def open_and_run(browser, server, name):
    """Open notebook ``name`` in the server, run all cells, wait for the widget's first grid."""
    page = browser.page
    page.goto(server["url"](name))
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    page.wait_for_function(IDLE_JS, timeout=KERNEL_TIMEOUT_S * 1000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(FIRST_OUTCOME_JS, timeout=RENDER_TIMEOUT_MS)
    if not page.locator(".fmw-root canvas.fmw-grid[data-draws]").count():
        page.wait_for_timeout(500)
        outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
        raise AssertionError(f"the widget did not render; outputs: {outputs}; page errors: "
                             f"{browser.errors}; console: {browser.console}")


def run_cell(page, index):
    """Run code cell ``index`` (0-based) of the open notebook, as Ctrl+Enter would, and wait."""
    page.evaluate(
        """(i) => { const nb = window.jupyterapp.shell.currentWidget.content;
             nb.activeCellIndex = i; return window.jupyterapp.commands.execute('notebook:run-cell'); }""",
        index,
    )
    page.wait_for_function(IDLE_JS, timeout=KERNEL_TIMEOUT_S * 1000)


def read_state(root):
    f = root / STATE_FILE
    return json.loads(f.read_text()) if f.exists() else None


def wait_state(root, predicate, what, timeout=30):
    """Poll the kernel-side JSON until ``predicate(state)`` holds; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(root)
        if state is not None and predicate(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"kernel side never showed {what}; last state: {state}")
        time.sleep(0.05)


def layer_names(state):
    return [d["name"] for d in state["layers"]]


def drawn_layer(page, view="maps"):
    """The layer the grid canvas of ``view`` shows now."""
    return page.locator(f".fmw-{view}-view canvas.fmw-grid").get_attribute("data-layer")
