"""The README's main command, ``fmwidget demo``, run as a user would, in headless Chromium.

``python -m fmwidget demo`` copies the quickstart notebook into a folder of its own and starts
JupyterLab there. The test runs it from the repository root (where the README's newcomer is),
with ``FMWIDGET_DEMO_DIR`` pointing at a temporary folder, opens the notebook, runs all cells,
checks that the widget renders, saves the notebook as JupyterLab's autosave would, and checks
that the save went to the copy while the repository's ``notebooks/quickstart.ipynb`` and
``git status`` stayed as they were (the README's next command, the test suite, needs them
clean). It also checks ``python -m fmwidget layers squeezenet``.
"""
import importlib.util
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import expect
except ImportError:  # the `chromium` fixture skips with the reason
    expect = None

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NOTEBOOKS = REPO / "notebooks"
QUICKSTART = NOTEBOOKS / "quickstart.ipynb"
# The server helpers of conftest.py (isolated folders, no news toast, the token); loaded by path
# because tests/conftest.py also exists and a plain `import conftest` could get that one.
_spec = importlib.util.spec_from_file_location("fmwidget_e2e_conftest", HERE / "conftest.py")
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

KERNEL_TIMEOUT_S = 60
RENDER_TIMEOUT_MS = 180_000  # kernel start + torch import + demo_model() + one forward pass
STOP_TIMEOUT_S = 20
SAVE_TIMEOUT_S = 30

KERNEL_IDLE_JS = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle'; }"""
# True once the widget rendered or something visibly failed (a traceback, a JS error box).
FIRST_OUTCOME_JS = """() => !!document.querySelector('input[aria-label="Layer"]')
  || [...document.querySelectorAll('.jp-OutputArea-output')].some(
       (o) => /javascript error|Traceback/i.test(o.textContent))"""
# True once every code cell has run (its prompt shows a number) and the kernel is idle again.
ALL_CELLS_RUN_JS = """() => { const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
  const done = cells.length > 0 && cells.every((c) => {
    const p = c.querySelector('.jp-InputPrompt'); return p && /\\[\\d+\\]/.test(p.textContent); });
  const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  return done && k.status === 'idle'; }"""


def _stop(proc):
    """SIGTERM (the server shuts its kernels down), then SIGKILL after STOP_TIMEOUT_S."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _git_status():
    """``git status --porcelain`` of the repository, or None without git or a .git folder."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return None
    # --no-optional-locks: only look, never refresh the index (others may be using the clone).
    return subprocess.run(["git", "--no-optional-locks", "status", "--porcelain",
                           "--untracked-files=all"], cwd=REPO, capture_output=True, text=True,
                          check=True, timeout=60).stdout


def _outputs_on_disk(path):
    """How many code cells of the notebook file at ``path`` have saved outputs."""
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return 0
    return sum(1 for c in nb["cells"] if c["cell_type"] == "code" and c.get("outputs"))


@pytest.fixture
def demo_server(tmp_path):
    """``python -m fmwidget demo`` from the repository root, its copy in a temporary folder."""
    demo_dir = (tmp_path / "demo").resolve()
    env = e2e._isolated_env(tmp_path / "jhome")  # also puts the repo's src on PYTHONPATH
    env["FMWIDGET_DEMO_DIR"] = str(demo_dir)
    port = e2e._free_port()
    cmd = [
        sys.executable, "-m", "fmwidget", "demo", "--no-browser", f"--port={port}",
        f"--IdentityProvider.token={e2e.TOKEN}", "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1", "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    # The repository as it was before the demo started, to compare with after its run.
    before = {"notebook": QUICKSTART.read_bytes(), "git_status": _git_status()}
    log_path = tmp_path / "demo.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            e2e._wait_until_up(proc, base, log_path)
            yield {"base": base, "copy": demo_dir / "quickstart.ipynb", "log": log_path,
                   "before": before,
                   "url": f"{base}/lab/tree/quickstart.ipynb?token={e2e.TOKEN}"}
        finally:
            _stop(proc)


def test_fmwidget_demo_opens_a_working_quickstart(demo_server, browser, artifacts):
    before = demo_server["before"]
    copy = demo_server["copy"]
    log = demo_server["log"].read_text()
    assert f"Demo notebook: {copy} (" in log, f"the demo should say it opens {copy}; log:\n{log}"
    assert copy.read_bytes() == before["notebook"], "the copy should be the quickstart as committed"

    page = browser.page
    page.goto(demo_server["url"])
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    page.wait_for_function(KERNEL_IDLE_JS, timeout=KERNEL_TIMEOUT_S * 1000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(FIRST_OUTCOME_JS, timeout=RENDER_TIMEOUT_MS)

    slider = page.locator('input[aria-label="Layer"]')
    if not slider.count():
        page.wait_for_timeout(500)
        outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
        page.screenshot(path=str(artifacts / "demo.png"))
        raise AssertionError(f"the quickstart widget did not render; outputs: {outputs}; "
                             f"page errors: {browser.errors}; console: {browser.console}")
    expect(slider).to_be_visible()
    grid = page.locator(".fmw-maps-view canvas.fmw-grid")
    expect(grid).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    expect(grid).to_have_attribute("data-draws", re.compile(r"^[1-9]"))  # the first layer drawn
    assert int(grid.get_attribute("width")) > 100 and int(grid.get_attribute("height")) > 50
    # offline, one plain sentence says which model is shown, the details one click away
    notes = page.locator(".fmw-notes")
    if "squeezenet" in page.locator(".fmw-model").inner_text().lower():
        expect(notes.locator("summary")).to_contain_text("Offline: showing the bundled")
        assert "URLError" not in notes.locator("summary").inner_text()
    model_name = page.locator(".fmw-model")
    expect(model_name).to_have_text(re.compile(r"squeezenet|resnet", re.IGNORECASE))
    # The quickstart's words are the widget's: it names every view button and the layer arrows
    # as they appear on screen.
    words = "".join("".join(c["source"]) for c in json.loads(before["notebook"])["cells"] if c["cell_type"] == "markdown")
    labels = page.locator("button[data-view]").all_inner_texts()
    labels += [page.locator(f'button[aria-label="{a}"]').inner_text() for a in ("Previous layer", "Next layer")]
    assert len(labels) == 5, labels
    for label in labels:
        assert label.strip() and label.strip() in words, f"the quickstart does not name the {label!r} button"

    # Every cell ran, and none raised (the offline fallback's warning is fine).
    page.wait_for_function(ALL_CELLS_RUN_JS, timeout=RENDER_TIMEOUT_MS)
    outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
    assert not any("Traceback" in o for o in outputs), outputs

    page.mouse.move(0, 0)
    page.evaluate("document.querySelector('.fmw-root').scrollIntoView({block: 'start'})")
    page.screenshot(path=str(artifacts / "demo.png"))
    assert not browser.errors, browser.errors

    # Save, as JupyterLab's autosave would a little later: the outputs must land in the copy,
    # and the repository must be as it was (the README's next command tests it).
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    deadline = time.monotonic() + SAVE_TIMEOUT_S
    while _outputs_on_disk(copy) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _outputs_on_disk(copy) > 0, f"JupyterLab did not save the executed notebook to {copy}"
    assert QUICKSTART.read_bytes() == before["notebook"], "the run changed the committed notebook"
    if before["git_status"] is not None:
        after = _git_status()
        # The whole working tree is compared: an edit someone else made in this clone while
        # the test ran would show up here too, under its own path.
        assert after == before["git_status"], (
            f"the demo changed the repository's git status:\nbefore:\n{before['git_status']}"
            f"\nafter:\n{after}")


def test_fmwidget_layers_prints_a_layer_table(tmp_path):
    env = e2e._isolated_env(tmp_path)  # the repo's src on PYTHONPATH, one thread
    run = subprocess.run([sys.executable, "-m", "fmwidget", "layers", "squeezenet"], env=env,
                         check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"rc={run.returncode}\n{run.stdout}\n{run.stderr}"
    lines = run.stdout.strip().splitlines()
    head = re.fullmatch(r"squeezenet: input \(1, 3, (\d+), (\d+)\), (\d+) layers", lines[0])
    assert head, f"unexpected first line: {lines[0]!r}"
    n_layers = int(head.group(3))
    assert n_layers > 0, lines[0]
    assert lines[1].split()[:3] == ["layer", "type", "output"], lines[1]
    rows = [line.split() for line in lines[2:]]
    assert len(rows) == n_layers, f"{n_layers} layers announced, {len(rows)} rows:\n{run.stdout}"
    names = [r[0] for r in rows]
    assert len(set(names)) == len(names), f"repeated layer names: {names}"
    # torchvision's SqueezeNet: convs in `features`, then the 1x1 classifier conv
    assert all(n.startswith(("features.", "classifier.")) for n in names), names
    # The first layer is SqueezeNet 1.0's stem: 96 filters of 7x7 over 3 input channels.
    assert rows[0][1] == "Conv2d" and rows[0][-1] == "96x3x7x7", rows[0]
    for r in rows:
        shape = re.fullmatch(r"\((\d+), (\d+), (\d+)\)", " ".join(r[2:-1]))
        assert shape, f"output column is not (C, H, W): {r}"
