"""Fixtures for the real-browser tests: a Jupyter server and headless Chromium.

The tests start a real JupyterLab 4 or Notebook 7 server on 127.0.0.1 with isolated config
folders, and drive it with the system Chromium (``/usr/bin/chromium``) through Playwright.
Playwright's own browser download (``playwright install``) is never used.

Set-up on a new machine::

    apt-get install -y chromium
    pip install playwright jupyterlab notebook nbformat

The tests skip, with the reason, only when Chromium or Playwright is missing. Screenshots and
``timings.json`` go to ``tests/e2e/artifacts/`` (git-ignored).
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SRC = REPO / "src"
ARTIFACTS = HERE / "artifacts"
CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TOKEN = "fmwidget-e2e-token"
SERVER_START_TIMEOUT_S = 60
UI_TIMEOUT_MS = 60_000
EXPECT_TIMEOUT_MS = 20_000  # Playwright's default for expect() is only 5 s
# Notebook 7.6.5 raises this on every page load (its shortcuts plugin, before any cell runs).
# It has nothing to do with widgets, so it is tolerated; any other uncaught page error fails.
KNOWN_PAGE_ERRORS = ("Cannot read properties of undefined (reading 'schema')",)

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the tests skip below and say why
    sync_playwright = None
else:
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Timings:
    """Collects named timings and writes them to ``artifacts/timings.json`` at once."""

    def __init__(self, path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def __setitem__(self, key, value):
        self.data[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1, sort_keys=True))


@pytest.fixture(scope="session")
def artifacts():
    """The folder for screenshots and timings (created on demand)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def timings(artifacts):
    """A dict-like recorder whose every assignment is saved to ``timings.json``."""
    path = artifacts / "timings.json"
    if path.exists():
        path.unlink()
    return Timings(path)


@pytest.fixture(scope="session")
def chromium():
    """A headless system Chromium driven by Playwright (a fresh profile per launch)."""
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install playwright; no `playwright install`)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _isolated_env(home):
    env = dict(os.environ)
    for var, sub in [("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                     ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("IPYTHONDIR", "ipython")]:
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    # Pre-answer the "notified about official Jupyter news?" toast, which would otherwise
    # cover the bottom right of every screenshot, and switch update checks off.
    notif = (home / "settings" / "@jupyterlab" / "apputils-extension"
             / "notification.jupyterlab-settings")
    notif.parent.mkdir(parents=True, exist_ok=True)
    notif.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # The kernel imports fmwidget from this checkout whether or not it is pip-installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(SRC), env.get("PYTHONPATH", "")] if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_until_up(proc, base, log_path):
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    req = urllib.request.Request(f"{base}/api/status", headers={"Authorization": f"token {TOKEN}"})
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with rc={proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"server not up in {SERVER_START_TIMEOUT_S}s:\n{log_path.read_text()}")
        time.sleep(0.1)


@pytest.fixture(params=["lab", "notebook"])
def jupyter_server(request, tmp_path, timings):
    """A real JupyterLab 4 (``lab``) or Notebook 7 (``notebook``) server on 127.0.0.1.

    Yields a dict with ``app``, ``base`` (URL), ``root`` (its notebook folder), ``url(name)``
    (the page URL of a notebook in ``root``) and ``log`` (the server log path).
    """
    app = request.param
    module = {"lab": "jupyterlab", "notebook": "notebook"}[app]
    root = tmp_path / "root"
    root.mkdir()
    env = _isolated_env(tmp_path / "jhome")
    port = _free_port()
    expose = "LabApp" if app == "lab" else "JupyterNotebookApp"
    cmd = [
        sys.executable, "-m", module, "--no-browser", "--allow-root",
        "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
        f"--{expose}.expose_app_in_browser=True",  # window.jupyterapp: commands and state
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log_path = tmp_path / "server.log"
    log = open(log_path, "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    page_path = "lab/tree" if app == "lab" else "notebooks"
    try:
        _wait_until_up(proc, base, log_path)
        timings[f"{app}_server_start_s"] = round(time.perf_counter() - t0, 2)
        yield {"app": app, "base": base, "root": root, "log": log_path,
               "url": lambda name: f"{base}/{page_path}/{name}?token={TOKEN}"}
    finally:
        proc.terminate()  # SIGTERM: the server shuts its kernels down cleanly
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def browser(chromium):
    """A fresh browser context and page; uncaught page errors are collected in ``errors``.

    Yields a namespace with ``context``, ``page``, ``errors`` (the known Notebook 7 error is
    left out) and ``console`` (console errors and warnings, to explain failures).
    """
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    errors = []

    def on_error(exc):
        if str(exc) not in KNOWN_PAGE_ERRORS:
            errors.append(f"{exc}\n{getattr(exc, 'stack', '')}")

    page.on("pageerror", on_error)
    console = []  # for failure messages only; the widget may log on purpose
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    try:
        yield SimpleNamespace(context=context, page=page, errors=errors, console=console)
    finally:
        context.close()
