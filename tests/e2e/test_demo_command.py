"""The README's main command, ``fmwidget demo``, run as a user would, in headless Chromium.

``python -m fmwidget demo`` starts JupyterLab on ``notebooks/quickstart.ipynb`` from the
current directory. The test runs it in a temporary folder that holds a copy of the repository's
``notebooks/`` (so the committed notebook is never touched), opens the notebook, runs all cells
and checks that the widget renders. It also checks ``python -m fmwidget layers squeezenet``.
"""
import importlib.util
import re
import shutil
import signal
import subprocess
import sys
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
DATA_URL = re.compile(r"^data:image/[a-z+]+;base64,.{100,}")

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


@pytest.fixture
def demo_server(tmp_path):
    """``python -m fmwidget demo`` in a temporary folder holding a copy of ``notebooks/``."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(NOTEBOOKS, work / "notebooks")
    env = e2e._isolated_env(tmp_path / "jhome")  # also puts the repo's src on PYTHONPATH
    port = e2e._free_port()
    cmd = [
        sys.executable, "-m", "fmwidget", "demo", "--no-browser", f"--port={port}",
        f"--IdentityProvider.token={e2e.TOKEN}", "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1", "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log_path = tmp_path / "demo.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            e2e._wait_until_up(proc, base, log_path)
            yield {"base": base, "work": work, "log": log_path,
                   "url": f"{base}/lab/tree/quickstart.ipynb?token={e2e.TOKEN}"}
        finally:
            _stop(proc)


def test_fmwidget_demo_opens_a_working_quickstart(demo_server, browser, artifacts):
    committed = QUICKSTART.read_bytes()
    copy = demo_server["work"] / "notebooks" / "quickstart.ipynb"
    log = demo_server["log"].read_text()
    assert str(copy) in log, f"the demo should open the copy in the current folder; log:\n{log}"

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
    grid_img = page.locator("img.fmw-grid-img")
    expect(grid_img).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    expect(grid_img).to_have_attribute("src", DATA_URL)
    model_name = page.locator(".fmw-model")
    expect(model_name).to_have_text(re.compile(r"squeezenet|resnet", re.IGNORECASE))

    # Every cell ran, and none raised (the offline fallback's warning is fine).
    page.wait_for_function(ALL_CELLS_RUN_JS, timeout=RENDER_TIMEOUT_MS)
    outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
    assert not any("Traceback" in o for o in outputs), outputs

    page.mouse.move(0, 0)
    page.evaluate("document.querySelector('.fmw-root').scrollIntoView({block: 'start'})")
    page.screenshot(path=str(artifacts / "demo.png"))
    assert not browser.errors, browser.errors
    assert QUICKSTART.read_bytes() == committed, "the run changed the committed notebook"


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
