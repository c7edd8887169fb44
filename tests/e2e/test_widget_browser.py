"""FeatureMapExplorer in a real JupyterLab 4 and Notebook 7, driven by headless Chromium.

Each test writes a notebook, runs it in a real server, then uses the widget the way a person
does (keyboard, mouse drag, clicks on the grid picture) and checks both the DOM (the contract
in docs/design.md) and the kernel side, which an observer in the notebook writes to a JSON file.
It also measures, in the same page and interleaved, the round trip of a trivial anywidget and
the time from a layer-slider input event to the new grid picture decoded (``img.decode()``),
for moves to the neighbouring layer (which the kernel prefetches) and for jumps of several
layers (not prefetched); the medians go to ``artifacts/timings.json``.
"""
import json
import re
import statistics
import textwrap
import time

import nbformat
import pytest

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import expect
except ImportError:  # the `chromium` fixture skips with the reason
    expect = None

STATE_FILE = "widget_state.json"
KERNEL_TIMEOUT_S = 60
RENDER_TIMEOUT_MS = 120_000  # kernel start + torch import + resnet18 + one forward pass
N_SAMPLES = 15  # timing samples of each kind, interleaved
SAMPLE_PAUSE_S = 0.3  # between samples, as between a person's key presses (no back-to-back queueing)
# a src that holds an inline image
DATA_URL = re.compile(r"^data:image/[a-z+]+;base64,.{100,}")

WIDGET_CELL = textwrap.dedent(f"""\
    import json, os, pathlib
    import skimage.data, torch, torchvision
    from fmwidget import FeatureMapExplorer

    torch.manual_seed(0)
    img = skimage.data.chelsea()
    w = FeatureMapExplorer(torchvision.models.resnet18(weights=None).eval(), img)

    def _dump_state(change=None):
        meta = dict(w._grid_meta or {{}})
        state = {{
            "layer": w.layer, "channel": w.channel, "view": w.view, "norm": w.norm,
            "error": w._error,
            "layers": [{{"name": d["name"], "out_shape": list(d["out_shape"])}} for d in w._layers],
            "grid": {{k: meta.get(k) for k in
                     ("layer", "page", "rows", "cols", "width", "height", "channels")}},
        }}
        tmp = pathlib.Path({STATE_FILE!r} + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, {STATE_FILE!r})

    w.observe(_dump_state, names=["layer", "channel", "view", "norm", "_grid_meta", "_error"])
    _dump_state()
    w
""")

# A trivial anywidget: the browser sets `ping`, a Python observer echoes it into `pong`.
# `el.e2eEcho(n)` resolves with the milliseconds until `pong == n` arrives back.
ECHO_CELL = textwrap.dedent('''\
    import anywidget, traitlets

    class Echo(anywidget.AnyWidget):
        _esm = """
        function render({ model, el }) {
          el.classList.add("e2e-echo");
          el.textContent = "echo";
          el.e2eEcho = (n) => new Promise((resolve) => {
            const t0 = performance.now();
            const onPong = () => {
              if (model.get("pong") === n) {
                model.off("change:pong", onPong);
                resolve(performance.now() - t0);
              }
            };
            model.on("change:pong", onPong);
            model.set("ping", n);
            model.save_changes();
          });
          return () => { delete el.e2eEcho; };
        }
        export default { render };
        """
        ping = traitlets.Int(0).tag(sync=True)
        pong = traitlets.Int(0).tag(sync=True)

    echo = Echo()
    echo.observe(lambda change: setattr(echo, "pong", change["new"]), names="ping")
    echo
''')

# Records when the first cell's prompt gets its number and when the layer slider appears.
WATCH_RENDER_JS = """() => {
  const rec = window.__e2eRender = {t0: performance.now(), cellDone: null, rendered: null};
  const id = setInterval(() => {
    const prompt = document.querySelector('.jp-Notebook .jp-Cell .jp-InputPrompt');
    if (rec.cellDone === null && prompt && /\\[\\d+\\]/.test(prompt.textContent)) {
      rec.cellDone = performance.now();
    }
    if (rec.rendered === null && document.querySelector('input[aria-label="Layer"]')) {
      rec.rendered = performance.now();
    }
    if (rec.cellDone !== null && rec.rendered !== null) clearInterval(id);
  }, 10);
}"""

FIRST_OUTCOME_JS = """() => !!document.querySelector('input[aria-label="Layer"]')
  || [...document.querySelectorAll('.jp-OutputArea-output')].some(
       (o) => /javascript error|Traceback/i.test(o.textContent))"""

# Records the time of the first user input on the layer slider and of every new grid picture
# (src change, and when that picture is decoded, i.e. ready to be shown).
WATCH_GRID_JS = """() => {
  const root = document.querySelector('.fmw-root');
  const slider = root.querySelector('input[aria-label="Layer"]');
  const first = root.querySelector('img.fmw-grid-img');
  const rec = window.__e2eGrid = {input: null, changes: []};
  let last = first ? first.src : null;
  const onInput = () => { if (rec.input === null) rec.input = performance.now(); };
  slider.addEventListener('keydown', onInput, {capture: true});
  slider.addEventListener('pointerdown', onInput, {capture: true});
  const obs = new MutationObserver(() => {
    const img = root.querySelector('img.fmw-grid-img');
    if (!img || img.src === last) return;
    last = img.src;
    const change = {src: performance.now(), shown: null, len: img.src.length};
    rec.changes.push(change);
    img.decode().catch(() => {}).then(() => { change.shown = performance.now(); });
  });
  obs.observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
  rec.stop = () => {
    obs.disconnect();
    slider.removeEventListener('keydown', onInput, {capture: true});
    slider.removeEventListener('pointerdown', onInput, {capture: true});
  };
}"""


# Moves the layer slider to `index` with an input event, as a key press or a drag step does.
# Resolves with the ms from that input event (seen first, in the capture phase) until the last
# new grid picture is decoded, once no further picture has come for `settle` ms.
MOVE_TIMED_JS = """([index, settle]) => new Promise((resolve) => {
  const root = document.querySelector('.fmw-root');
  const slider = root.querySelector('input[aria-label="Layer"]');
  const img = root.querySelector('img.fmw-grid-img');
  let t0 = null, last = img.getAttribute('src'), seen = 0, timer = 0;
  const onInput = () => { if (t0 === null) t0 = performance.now(); };
  root.addEventListener('input', onInput, {capture: true});
  const obs = new MutationObserver(() => {
    const src = img.getAttribute('src');
    if (!src || src === last) return;
    last = src;
    const n = ++seen;
    img.decode().catch(() => {}).then(() => {
      if (n !== seen) return;
      const shown = performance.now();
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (n !== seen) return;
        obs.disconnect();
        root.removeEventListener('input', onInput, {capture: true});
        resolve({ms: shown - t0, pictures: seen});
      }, settle);
    });
  });
  obs.observe(img, {attributes: true, attributeFilter: ['src']});
  slider.value = String(index);
  slider.dispatchEvent(new Event('input', {bubbles: true}));
})"""


def _write_notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(WIDGET_CELL), nbformat.v4.new_code_cell(ECHO_CELL)]
    nbformat.write(nb, path)


def _read_state(root):
    f = root / STATE_FILE
    return json.loads(f.read_text()) if f.exists() else None


def _wait_state(root, predicate, what, timeout=30):
    """Poll the kernel-side JSON until ``predicate(state)`` holds; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        state = _read_state(root)
        if state is not None and predicate(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"kernel side never showed {what}; last state: {state}")
        time.sleep(0.05)


def _layer_names(state):
    return [d["name"] for d in state["layers"]]


def _open_and_run(browser, server, timings):
    app, page = server["app"], browser.page
    page.goto(server["url"]("probe.ipynb"))
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    page.wait_for_function(
        """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
             const k = w && w.sessionContext && w.sessionContext.session
                       && w.sessionContext.session.kernel;
             return !!k && k.status === 'idle'; }""", timeout=KERNEL_TIMEOUT_S * 1000)
    page.evaluate(WATCH_RENDER_JS)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    # Stop at the first sign of a failure (a kernel traceback or a widget that failed to
    # render) instead of waiting for the whole timeout.
    page.wait_for_function(FIRST_OUTCOME_JS, timeout=RENDER_TIMEOUT_MS)
    if not page.locator('input[aria-label="Layer"]').count():
        page.wait_for_timeout(500)
        outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
        raise AssertionError(f"the widget did not render; outputs: {outputs}; "
                             f"page errors: {browser.errors}; console: {browser.console}")
    expect(page.locator('input[aria-label="Layer"]')).to_be_visible()
    page.wait_for_function("() => window.__e2eRender.cellDone !== null")
    rec = page.evaluate("window.__e2eRender")
    timings[f"{app}_cell_done_s"] = round((rec["cellDone"] - rec["t0"]) / 1000, 2)
    timings[f"{app}_widget_visible_s"] = round((rec["rendered"] - rec["t0"]) / 1000, 2)
    # Negative when the widget appears before the prompt gets its number (the usual case).
    timings[f"{app}_render_after_cell_done_s"] = round(
        (rec["rendered"] - rec["cellDone"]) / 1000, 2)


def _grid_ready(page, root):
    """Wait until the kernel's grid is for the current layer and the picture matches it."""
    state = _wait_state(root, lambda s: s["grid"]["layer"] == s["layer"] and s["grid"]["channels"],
                        "a grid for the current layer")
    grid = state["grid"]
    page.wait_for_function(
        """([w, h]) => { const i = document.querySelector('img.fmw-grid-img');
             return i && i.complete && i.naturalWidth === w && i.naturalHeight === h; }""",
        arg=[grid["width"], grid["height"]])
    return state


def _move_layer(page, root, action):
    """Run ``action`` (a slider move); return (new state, ms from input to new grid shown)."""
    grid_img = page.locator("img.fmw-grid-img")
    header = page.locator(".fmw-layer-name")
    before = _read_state(root)
    old_src, old_header = grid_img.get_attribute("src"), header.inner_text()
    page.evaluate(WATCH_GRID_JS)
    action()
    expect(header).not_to_have_text(old_header)
    # A drag passes through several layers: wait until the kernel and the header agree.
    state = _wait_state(root, lambda s: s["layer"] != before["layer"]
                        and s["layer"] == header.inner_text().strip(), "the header's new layer")
    expect(grid_img).not_to_have_attribute("src", old_src)
    _grid_ready(page, root)
    page.wait_for_function(
        "() => { const r = window.__e2eGrid; return r.input !== null && r.changes.length > 0"
        " && r.changes[r.changes.length - 1].shown !== null; }")
    time.sleep(0.3)  # let a late second picture (e.g. after a placeholder) land, then take the last
    rec = page.evaluate("() => { const r = window.__e2eGrid; r.stop();"
                        " return {input: r.input, changes: r.changes}; }")
    assert grid_img.get_attribute("src").startswith("data:image/")
    return state, rec["changes"][-1]["shown"] - rec["input"]


def _drag_slider(page, slider, fraction):
    """Drag the range input's thumb with the real mouse to ``fraction`` of its width."""
    slider.scroll_into_view_if_needed()
    box = slider.bounding_box()
    lo, hi = float(slider.get_attribute("min") or 0), float(slider.get_attribute("max"))
    value = float(slider.input_value())
    thumb = 16  # Chromium's default thumb width; the track runs between the thumb centres
    x0 = box["x"] + thumb / 2 + (value - lo) / (hi - lo) * (box["width"] - thumb)
    x1 = box["x"] + thumb / 2 + fraction * (box["width"] - thumb)
    y = box["y"] + box["height"] / 2
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move(x1, y, steps=8)
    page.mouse.up()


def _click_tile(page, root, index):
    """Click tile ``index`` (row-major) of the grid picture; return the channel it shows."""
    state = _grid_ready(page, root)
    grid = state["grid"]
    img = page.locator("img.fmw-grid-img")
    img.scroll_into_view_if_needed()
    box = img.bounding_box()
    row, col = divmod(index, grid["cols"])
    x = (col + 0.5) / grid["cols"] * box["width"]
    y = (row + 0.5) / grid["rows"] * box["height"]
    img.click(position={"x": x, "y": y})
    return grid["channels"][index]


def _timed_move(page, root, names, index):
    """Move the slider to layer ``index``; return ms from the input event to its grid shown."""
    rec = page.evaluate(MOVE_TIMED_JS, [index, 300])
    state = _grid_ready(page, root)
    assert state["layer"] == names[index], (state["layer"], names[index])
    expect(page.locator(".fmw-layer-name")).to_have_text(names[index])
    assert rec["pictures"] >= 1, rec
    return rec["ms"]


def _measure_round_trips(page, root, names, app, timings):
    """Interleave, in the same page: a trivial anywidget's round trip, a move to the next layer
    (prefetched by the kernel), and a jump of several layers (outside the prefetch window).
    Each sample starts when nothing else is in flight."""
    expect(page.locator(".e2e-echo")).to_be_attached()
    echo, near, far = [], [], []
    at = names.index(_read_state(root)["layer"])
    jump = max(3, len(names) // 3)
    for n in range(1, N_SAMPLES + 1):
        time.sleep(SAMPLE_PAUSE_S)
        echo.append(page.evaluate("(n) => document.querySelector('.e2e-echo').e2eEcho(n)", n))
        time.sleep(SAMPLE_PAUSE_S)  # also lets the kernel finish prefetching the neighbours
        at = at + 1 if at + 1 < len(names) else at - 1
        near.append(_timed_move(page, root, names, at))
        time.sleep(SAMPLE_PAUSE_S)
        at = (at + jump) % len(names)
        far.append(_timed_move(page, root, names, at))
    for key, samples in [("echo_roundtrip", echo), ("layer_to_grid", near),
                         ("layer_to_grid_far", far)]:
        timings[f"{app}_{key}_ms_median"] = round(statistics.median(samples), 1)
        timings[f"{app}_{key}_ms_samples"] = [round(s, 1) for s in samples]
    timings[f"{app}_layer_to_grid_over_echo"] = round(
        statistics.median(near) / statistics.median(echo), 2)


def test_feature_map_explorer_in_jupyter(jupyter_server, browser, timings, artifacts):
    app, root = jupyter_server["app"], jupyter_server["root"]
    page = browser.page
    _write_notebook(root / "probe.ipynb")
    _open_and_run(browser, jupyter_server, timings)

    slider = page.locator('input[type=range][aria-label="Layer"]')
    channel = page.locator('input[type=number][aria-label="Channel"]')
    grid_img = page.locator("img.fmw-grid-img")
    expect(slider).to_have_attribute("data-lm-suppress-shortcuts", "true")
    expect(grid_img).to_be_visible()
    state = _grid_ready(page, root)
    page.mouse.move(0, 0)
    page.locator(".fmw-root").screenshot(path=str(artifacts / f"{app}_first_widget.png"))
    page.evaluate("document.querySelector('.fmw-root').scrollIntoView({block: 'end'})")
    page.screenshot(path=str(artifacts / f"{app}_first.png"))
    names = _layer_names(state)
    assert state["layer"] in names and state["view"] == "maps", state

    # 1) keyboard: focus the slider, ArrowRight selects the next layer
    move_ms = []
    start = names.index(state["layer"])
    slider.focus()
    state, ms = _move_layer(page, root, lambda: slider.press("ArrowRight"))
    assert state["layer"] == names[start + 1], (state["layer"], names[start:start + 2])
    move_ms.append(ms)
    for key in ["ArrowRight", "ArrowRight", "ArrowLeft", "ArrowRight"]:  # more timing samples
        slider.focus()
        state, ms = _move_layer(page, root, lambda key=key: slider.press(key))
        move_ms.append(ms)

    # 2) a real mouse drag of the thumb to the middle of the track
    state, ms = _move_layer(page, root, lambda: _drag_slider(page, slider, 0.5))
    move_ms.append(ms)
    where = names.index(state["layer"])
    assert abs(where - len(names) / 2) <= max(2, len(names) / 8), (
        f"a drag to the middle selected {state['layer']} ({where} of {len(names)} layers)")
    # real key presses and a real drag, timed the same way (the drag passes several layers)
    timings[f"{app}_ui_moves_ms_samples"] = [round(m, 1) for m in move_ms]

    # 2b) the round trips: trivial anywidget vs layer moves, interleaved
    _measure_round_trips(page, root, names, app, timings)

    # 3) click a tile: its channel becomes the selected one, in the browser and in the kernel
    _grid_ready(page, root)
    before = int(channel.input_value())
    grid_channels = _read_state(root)["grid"]["channels"]
    index = next(i for i in range(5, len(grid_channels))
                 if grid_channels[i] not in (-1, before))
    picked = _click_tile(page, root, index)
    expect(channel).to_have_value(str(picked))
    state = _wait_state(root, lambda s: s["channel"] == picked, f"channel {picked}")
    expect(page.locator(".fmw-tile-selected")).to_be_visible()
    page.mouse.move(0, 0)  # no hover zoom over the screenshot
    page.screenshot(path=str(artifacts / f"{app}_maps.png"))
    page.locator(".fmw-root").screenshot(path=str(artifacts / f"{app}_maps_widget.png"))

    # 4) values out of range or not allowed, sent from the browser
    n_channels = next(d["out_shape"][0] for d in state["layers"] if d["name"] == state["layer"])
    error = page.locator('.fmw-error[role="alert"]')
    channel.fill("99999")
    channel.press("Enter")
    # The front end may clamp (the kernel then gets the last channel) or pass the number on
    # (the kernel refuses it and says why); either way the kernel keeps a valid channel and,
    # once the input loses focus, the input shows that channel.
    _wait_state(root, lambda s: s["channel"] == n_channels - 1 or s["error"],
                "the clamped channel or an error")
    channel.blur()
    state = _read_state(root)
    assert 0 <= state["channel"] < n_channels, state
    expect(channel).to_have_value(str(state["channel"]))
    if state["error"]:
        error.locator("button").first.click()
        _wait_state(root, lambda s: not s["error"], "the error cleared")

    # A value that no control offers (a stale or tampered page) reaches the kernel, which
    # refuses it, shows a readable message in the widget and keeps its state.
    norm = page.locator('select[aria-label="Normalisation"]')
    norm_before = norm.input_value()
    norm.evaluate("(s) => s.append(new Option('no-such-norm', 'no-such-norm'))")
    norm.select_option("no-such-norm")
    expect(error).to_be_visible()
    expect(error).to_contain_text("norm", ignore_case=True)
    message = error.inner_text()
    assert "no-such-norm" in message, f"the message should quote the refused value: {message!r}"
    assert "Traceback" not in message and "[object" not in message, message
    expect(norm).to_have_value(norm_before)
    state = _wait_state(root, lambda s: s["error"], "the refusal in _error")
    assert state["norm"] == norm_before, state
    error.locator("button").first.click()
    expect(error).to_be_hidden()
    _wait_state(root, lambda s: not s["error"], "the error cleared")

    # 5) side-by-side view: map, filter, overlay opacity, guided backprop
    page.locator('button[data-view="side"]').click()
    expect(page.locator('button[data-view="side"]')).to_have_attribute("aria-pressed", "true")
    expect(page.locator(".fmw-side")).to_be_visible()
    _wait_state(root, lambda s: s["view"] == "side", 'view "side"')
    for sel in ["img.fmw-side-map", "img.fmw-side-filter"]:
        expect(page.locator(sel)).to_be_visible()
        expect(page.locator(sel)).to_have_attribute("src", DATA_URL)
    overlay = page.locator(".fmw-side-overlay")
    opacity = page.locator('input[type=range][aria-label="Overlay opacity"]')
    expect(overlay).to_be_visible()
    shot_before = overlay.screenshot()
    value = float(opacity.input_value())
    lo, hi = float(opacity.get_attribute("min") or 0), float(opacity.get_attribute("max") or 1)
    target = lo if value - lo > hi - value else hi
    opacity.fill(str(target))
    expect(opacity).to_have_value(_number_text(target))
    page.wait_for_timeout(200)
    assert overlay.screenshot() != shot_before, "moving Overlay opacity changed nothing visible"
    page.locator('button[aria-label="Guided backprop"]').click()
    gbp = page.locator("img.fmw-side-gbp")
    expect(gbp).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    expect(gbp).to_have_attribute("src", DATA_URL)

    page.mouse.move(0, 0)
    page.screenshot(path=str(artifacts / f"{app}_side.png"))
    page.locator(".fmw-root").screenshot(path=str(artifacts / f"{app}_side_widget.png"))
    assert not browser.errors, browser.errors


def _number_text(x):
    return str(int(x)) if float(x).is_integer() else str(x)

