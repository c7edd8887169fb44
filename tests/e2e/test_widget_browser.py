"""FeatureMapExplorer in a real JupyterLab 4 and Notebook 7, driven by headless Chromium.

Each test writes a notebook, runs it in a real server and uses the widget the way a person does
(keyboard, mouse drag, clicks on the canvas, typing), then checks the DOM (the contract in
docs/design.md), the canvas pixels, and the kernel side, which an observer in the notebook
writes to a JSON file.

Timings go to ``artifacts/timings.json`` (medians of 15 interleaved rounds), never into an
assertion: from the input event to the new canvas painted (the next frame after the draw) for
what the browser draws from its cache (colormap, normalisation, page, channel, hover, a layer
seen before) and for a layer not yet seen, against a trivial widget's round trip with and
without a payload of that layer's grid size.
"""
import base64
import json
import statistics
import textwrap
import time

import nbdrive
import numpy as np
import pytest
from nbdrive import layer_names, read_state, wait_state
from PIL import Image

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import expect
except ImportError:  # the `chromium` fixture skips with the reason
    expect = None

N_ROUNDS = 15
PAUSE_S = 0.25  # between samples, as between a person's key presses

WIDGET_CELL = textwrap.dedent("""\
    import json, pathlib
    import skimage.data, torch, torchvision
    import fmwidget
    from fmwidget import FeatureMapExplorer

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    img = skimage.data.chelsea()
    # Every layer's grid update, from an explorer that is never shown: the trivial widget below
    # sends the same bytes back, so that its round trip includes the same transfer.
    with FeatureMapExplorer(model, img) as probe:
        payloads = {}
        for name in probe.layer_names:
            probe.layer = name
            payloads[name] = probe.get_state("_maps")["_maps"]
    pathlib.Path("grid_sizes.json").write_text(json.dumps({k: len(json.dumps(v)) for k, v in payloads.items()}))
    w = FeatureMapExplorer(model, img, page_size=16)
    _watch(w)
    w
""")

# A trivial anywidget: the browser sets `ping` (and `which`, a layer name or ""); Python answers
# `pong`, with that layer's grid payload in `blob` (the same JSON the explorer sends), and the
# widget shows the number it got back. `el.e2eEcho(n, which)` resolves with the ms from the
# request until that number is painted (measured as the explorer's repaints are).
ECHO_CELL = textwrap.dedent('''\
    import anywidget, traitlets

    class Echo(anywidget.AnyWidget):
        _esm = """
        function render({ model, el }) {
          el.classList.add("e2e-echo");
          el.textContent = "echo";
          el.e2eEcho = (n, which) => new Promise((resolve) => {
            const t0 = performance.now();
            const onPong = () => {
              if (model.get("pong") === n) {
                model.off("change:pong", onPong);
                el.textContent = `echo ${n}`;
                requestAnimationFrame(() => setTimeout(() => resolve(performance.now() - t0), 0));
              }
            };
            model.on("change:pong", onPong);
            model.set("which", which);
            model.set("ping", n);
            model.save_changes();
          });
          return () => { delete el.e2eEcho; };
        }
        export default { render };
        """
        ping = traitlets.Int(0).tag(sync=True)
        pong = traitlets.Int(0).tag(sync=True)
        which = traitlets.Unicode("").tag(sync=True)
        blob = traitlets.Dict().tag(sync=True)

    echo = Echo()

    def _answer(change):
        with echo.hold_sync():
            echo.blob = {**payloads.get(echo.which, {}), "n": change["new"]}  # new every time
            echo.pong = change["new"]

    echo.observe(_answer, names="ping")
    echo
''')

# Kernel-side files the checks compare with: the capture's own codes of a layer, and save_png.
CODES_CELL = textwrap.dedent("""\
    from fmwidget.capture import capture as _capture
    from fmwidget.codes import shrink as _shrink
    from fmwidget.grids import layout as _layout
    _req = json.loads(pathlib.Path("request.json").read_text())
    _cap = _capture(model, w.input_tensor)
    _info = _cap.info(_req["layer"])
    _c = _cap.codes(_req["layer"])
    pathlib.Path("codes.bin").write_bytes(_shrink(_c.codes, _layout(_info)["scale"]).numpy().tobytes())
    w.save_png("view.png", width=_req["avail"])
""")
# Keeps the kernel busy until the test writes "wake" (two minutes at most); "sleeping" says it
# began, "slept" that it ended.
SLEEP_CELL = textwrap.dedent("""\
    import time
    pathlib.Path("sleeping").write_text("1")
    _t0 = time.monotonic()
    while not pathlib.Path("wake").exists() and time.monotonic() - _t0 < 120:
        time.sleep(0.05)
    pathlib.Path("slept").write_text("1")
""")

# In-page timing helpers: from the input event to the frame that shows its result, painted.
TIMING_JS = """() => {
  const frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  const root = () => document.querySelector('.fmw-root');
  const canvas = () => root().querySelector('.fmw-maps-view canvas.fmw-grid');
  window.__fmw = {
    async timed(act, done) {
      // The widget draws in an animation frame: once the change is seen (a mutation observer
      // runs right after that frame's callbacks), a zero timeout runs after the frame is painted.
      const t0 = performance.now();
      act();
      if (done && !done()) {
        await new Promise((resolve, reject) => {
          const timer = setTimeout(() => { obs.disconnect(); reject(new Error(`no repaint after ${act}`)); }, 20000);
          const obs = new MutationObserver(() => { if (done()) { obs.disconnect(); clearTimeout(timer); resolve(); } });
          obs.observe(root(), { subtree: true, attributes: true, childList: true, characterData: true });
        });
        const t1 = performance.now();
        await new Promise((r) => setTimeout(r, 0));
        return { drawn: t1 - t0, painted: performance.now() - t0 };
      }
      const t1 = performance.now();
      await frame();
      return { drawn: t1 - t0, painted: performance.now() - t0 };
    },
    layer(index, name) {
      const slider = root().querySelector('input[aria-label="Layer"]');
      return this.timed(() => {
        slider.value = String(index);
        slider.dispatchEvent(new Event('input', { bubbles: true }));
      }, () => canvas().dataset.layer === name);
    },
    select(label, value) {
      const sel = root().querySelector(`select[aria-label="${label}"]`);
      const before = canvas().dataset.draws;
      return this.timed(() => {
        sel.value = value;
        sel.dispatchEvent(new Event('change', { bubbles: true }));
      }, () => canvas().dataset.draws !== before);
    },
    page() {
      const next = root().querySelector('button[aria-label="Next page"]');
      const button = next.disabled ? root().querySelector('button[aria-label="Previous page"]') : next;
      const before = canvas().dataset.draws;
      return this.timed(() => button.click(), () => canvas().dataset.draws !== before);
    },
    tileCenter(i) {
      const c = canvas();
      const cols = Number(c.dataset.cols), z = Number(c.dataset.zoom), gap = 2;
      const tw = ((c.width - gap) / cols - gap) / z;
      const rect = c.getBoundingClientRect();
      const col = i % cols, row = Math.floor(i / cols);
      return { x: rect.left + gap + col * (tw * z + gap) + (tw * z) / 2, y: rect.top + gap + row * (tw * z + gap) + (tw * z) / 2 };
    },
    tile(i) {
      const label = root().querySelector('.fmw-maps-view .fmw-tile-label');
      const before = label.textContent;
      if (before === String(Number(canvas().dataset.first) + i)) i += 1;
      const at = this.tileCenter(i);
      return this.timed(() => canvas().dispatchEvent(new MouseEvent('click', { clientX: at.x, clientY: at.y, bubbles: true })),
        () => label.textContent !== before);
    },
    hover(i) {
      const at = this.tileCenter(i);
      const tip = root().querySelector('.fmw-hover');
      return this.timed(() => canvas().dispatchEvent(new PointerEvent('pointermove', { clientX: at.x, clientY: at.y, bubbles: true })),
        () => !tip.hidden);
    },
    unhover() { canvas().dispatchEvent(new PointerEvent('pointerleave', { bubbles: true })); },
    echo(n, which) { return document.querySelector('.e2e-echo').e2eEcho(n, which); },
  };
}"""

PIXELS_JS = """() => { const c = document.querySelector('.fmw-maps-view canvas.fmw-grid');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let s = ''; for (let i = 0; i < d.length; i += 32768) s += String.fromCharCode.apply(null, d.subarray(i, i + 32768));
  return { width: c.width, height: c.height, rgba: btoa(s) }; }"""

CODES_JS = """([layer, version]) => { const store = document.querySelector('.fmw-root').fmwStore;
  const e = store.cache.find(version, 'maps', layer, [0]);
  let s = ''; for (let i = 0; i < e.codes.length; i += 32768) s += String.fromCharCode.apply(null, e.codes.subarray(i, i + 32768));
  return { first: e.first, n: e.n, shape: e.shape, codes: btoa(s) }; }"""


def _median(samples, key="painted"):
    return round(statistics.median(s[key] for s in samples), 2)


def _measure(page, root, names, app, timings):
    """Interleaved rounds: echo (plain and with a grid-sized payload), a layer not yet seen, a
    layer seen before, colormap, normalisation, page, channel and hover."""
    sizes = json.loads((root / "grid_sizes.json").read_text())
    page.evaluate(TIMING_JS)
    expect(page.locator(".e2e-echo")).to_be_attached()
    kinds = {k: [] for k in ("echo", "echo_grid", "unseen", "seen", "cmap", "norm", "page", "channel", "hover")}
    # each value differs from the one before it (and round 1's from "auto": viridis, channel)
    cmaps, norms = ["gray", "magma", "bwr", "viridis"], ["layer", "symmetric", "channel_symmetric", "channel"]
    for k in range(1, N_ROUNDS + 1):
        name = names[k]
        time.sleep(PAUSE_S)
        kinds["echo"].append({"painted": page.evaluate("(n) => window.__fmw.echo(n, '')", 2 * k)})
        time.sleep(PAUSE_S)
        kinds["echo_grid"].append({"painted": page.evaluate("([n, w]) => window.__fmw.echo(n, w)", [2 * k + 1, name])})
        time.sleep(PAUSE_S)
        kinds["unseen"].append(page.evaluate("([i, n]) => window.__fmw.layer(i, n)", [k, name]))
        wait_state(root, lambda s, name=name: s["layer"] == name and s["answers"]["_maps"]["layer"] == name, f"layer {name}")
        time.sleep(PAUSE_S)
        page.evaluate("([i, n]) => window.__fmw.layer(i, n)", [k - 1, names[k - 1]])
        time.sleep(PAUSE_S)
        kinds["seen"].append(page.evaluate("([i, n]) => window.__fmw.layer(i, n)", [k, name]))
        time.sleep(PAUSE_S)
        kinds["cmap"].append(page.evaluate("([l, v]) => window.__fmw.select(l, v)", ["Colormap", cmaps[k % 4]]))
        time.sleep(PAUSE_S)
        kinds["norm"].append(page.evaluate("([l, v]) => window.__fmw.select(l, v)", ["Normalisation", norms[k % 4]]))
        time.sleep(PAUSE_S)
        kinds["page"].append(page.evaluate("() => window.__fmw.page()"))
        time.sleep(PAUSE_S)
        kinds["channel"].append(page.evaluate("(i) => window.__fmw.tile(i)", 1 + k % 5))
        time.sleep(PAUSE_S)
        kinds["hover"].append(page.evaluate("(i) => window.__fmw.hover(i)", k % 7))
        page.evaluate("window.__fmw.unhover()")
    for kind, samples in kinds.items():
        timings[f"{app}_{kind}_ms_median"] = _median(samples)
        timings[f"{app}_{kind}_ms_samples"] = [round(s["painted"], 1) for s in samples]
    timings[f"{app}_unseen_over_echo_grid"] = round(_median(kinds["unseen"]) / _median(kinds["echo_grid"]), 2)
    timings[f"{app}_unseen_over_echo"] = round(_median(kinds["unseen"]) / _median(kinds["echo"]), 2)
    timings[f"{app}_grid_bytes_median"] = statistics.median(sizes[n] for n in names[1 : N_ROUNDS + 1])


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


def _canvas_rgba(page):
    shot = page.evaluate(PIXELS_JS)
    rgba = np.frombuffer(base64.b64decode(shot["rgba"]), np.uint8)
    return rgba.reshape(shot["height"], shot["width"], 4)


def _check_canvas_against_python(page, root, layer):
    """The browser's decoded codes equal the capture's, and the canvas equals save_png's grid."""
    canvas = page.locator(".fmw-maps-view canvas.fmw-grid")
    avail = int(canvas.get_attribute("data-avail"))
    (root / "request.json").write_text(json.dumps({"layer": layer, "avail": avail}))
    nbdrive.run_cell(page, 2)
    version = read_state(root)["answers"]["_maps"]["version"]
    got = page.evaluate(CODES_JS, [layer, version])
    codes = base64.b64decode(got["codes"])
    want = (root / "codes.bin").read_bytes()
    assert got["first"] == 0 and len(codes) == len(want), (got["shape"], len(want))
    assert codes == want, "the browser decoded other codes than the capture encoded"
    rgba = _canvas_rgba(page)
    png = Image.open(root / "view.png")
    box = json.loads(png.text["fmwidget:grid"])
    saved = np.asarray(png.convert("RGB"))[box["y"] : box["y"] + box["height"], box["x"] : box["x"] + box["width"]]
    assert saved.shape[:2] == rgba.shape[:2], (saved.shape, rgba.shape)
    drawn = rgba[..., 3] == 255  # the empty cells after the last tile are transparent
    assert drawn.mean() > 0.5
    assert np.array_equal(rgba[..., :3][drawn], saved[drawn]), "canvas and save_png differ"


def test_feature_map_explorer_in_jupyter(jupyter_server, browser, timings, artifacts):
    app, root, page = jupyter_server["app"], jupyter_server["root"], browser.page
    nbdrive.write_notebook(root / "probe.ipynb", [nbdrive.OBSERVER + WIDGET_CELL, ECHO_CELL, CODES_CELL, SLEEP_CELL])
    # Run the first two cells only: the others run on demand below.
    page.goto(jupyter_server["url"]("probe.ipynb"))
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    page.wait_for_function(nbdrive.IDLE_JS, timeout=nbdrive.KERNEL_TIMEOUT_S * 1000)
    nbdrive.run_cell(page, 0)
    nbdrive.run_cell(page, 1)
    page.wait_for_selector(".fmw-root canvas.fmw-grid[data-draws]", timeout=nbdrive.RENDER_TIMEOUT_MS)
    state = wait_state(root, lambda s: s["answers"].get("_maps"), "the first grid")
    names = layer_names(state)
    canvas = page.locator(".fmw-maps-view canvas.fmw-grid")
    expect(canvas).to_have_attribute("data-layer", names[0])
    page.mouse.move(0, 0)
    page.locator(".fmw-root").screenshot(path=str(artifacts / f"{app}_first_widget.png"))

    # 0) the timings, on a fresh widget (every layer after the first is unseen)
    _measure(page, root, names, app, timings)
    page.evaluate("() => { const s = document.querySelector('select[aria-label=\"Colormap\"]');"
                  " s.value = 'auto'; s.dispatchEvent(new Event('change', {bubbles: true}));"
                  " const n = document.querySelector('select[aria-label=\"Normalisation\"]');"
                  " n.value = 'auto'; n.dispatchEvent(new Event('change', {bubbles: true})); }")
    wait_state(root, lambda s: s["cmap"] == "auto" and s["norm"] == "auto", "auto style")

    # 1) the keyboard: focus the slider, ArrowRight selects the next layer
    slider = page.locator('input[type=range][aria-label="Layer"]')
    expect(slider).to_have_attribute("data-lm-suppress-shortcuts", "true")
    at = names.index(read_state(root)["layer"])
    slider.focus()
    slider.press("ArrowRight")
    state = wait_state(root, lambda s: s["layer"] == names[at + 1], f"layer {names[at + 1]}")
    expect(canvas).to_have_attribute("data-layer", names[at + 1])
    expect(page.locator(".fmw-layer-name")).to_have_text(names[at + 1])

    # 2) a real mouse drag of the thumb to the middle of the track
    _drag_slider(page, slider, 0.5)
    header = page.locator(".fmw-layer-name")
    # a drag passes several layers: wait until the kernel and the header agree on the last one
    state = wait_state(root, lambda s: s["layer"] == header.inner_text().strip()
                       and s["answers"]["_maps"]["layer"] == s["layer"], "the dragged-to layer")
    assert abs(names.index(state["layer"]) - len(names) / 2) <= max(2, len(names) / 8), state["layer"]
    expect(canvas).to_have_attribute("data-layer", state["layer"])

    # 3) a click on a tile selects its channel, in the browser and in the kernel
    page.evaluate(TIMING_JS)
    first = int(canvas.get_attribute("data-first"))
    at = page.evaluate("(i) => window.__fmw.tileCenter(i)", 5)
    page.mouse.click(at["x"], at["y"])
    wait_state(root, lambda s: s["channel"] == first + 5, f"channel {first + 5}")
    expect(page.locator('input[aria-label="Channel"]')).to_have_value(str(first + 5))
    expect(page.locator(".fmw-maps-view .fmw-tile-selected")).to_be_visible()
    expect(page.locator(".fmw-maps-view .fmw-tile-label")).to_have_text(str(first + 5))
    # the arrow keys move the selection on the focused grid
    canvas.focus()
    canvas.press("ArrowRight")
    wait_state(root, lambda s: s["channel"] == first + 6, f"channel {first + 6}")

    # 4) the browser decodes exactly the capture's codes; the canvas equals save_png's grid
    layer = read_state(root)["layer"]
    _check_canvas_against_python(page, root, layer)
    for cmap, norm in [("bwr", "symmetric"), ("gray", "layer"), ("magma", "channel_symmetric")]:
        page.locator('select[aria-label="Colormap"]').select_option(cmap)
        page.locator('select[aria-label="Normalisation"]').select_option(norm)
        wait_state(root, lambda s, c=cmap, n=norm: s["cmap"] == c and s["norm"] == n, f"{cmap} {norm}")
        _check_canvas_against_python(page, root, layer)
    page.mouse.move(0, 0)
    page.locator(".fmw-root").screenshot(path=str(artifacts / f"{app}_maps_magma.png"))

    # 5) the channel box names the valid range and keeps what was typed
    channel = page.locator('input[type=number][aria-label="Channel"]')
    count = next(d["out_shape"][0] for d in read_state(root)["layers"] if d["name"] == layer)
    before = read_state(root)["channel"]
    for typed in ("5000", "-3"):
        channel.fill(typed)
        channel.press("Enter")
        message = page.locator(".fmw-field-error")
        expect(message).to_be_visible()
        expect(message).to_contain_text(f"0 to {count - 1}")
        expect(channel).to_have_value(typed)
        assert read_state(root)["channel"] == before
    channel.fill("3")
    channel.press("Enter")
    wait_state(root, lambda s: s["channel"] == 3, "channel 3")
    expect(page.locator(".fmw-field-error")).to_be_hidden()

    # 6) a value no control offers (a tampered page) is refused by the kernel, readably
    error = page.locator('.fmw-error[role="alert"]')
    norm = page.locator('select[aria-label="Normalisation"]')
    norm_before = norm.input_value()
    norm.evaluate("(s) => s.append(new Option('no-such-norm', 'no-such-norm'))")
    norm.select_option("no-such-norm")
    expect(error).to_be_visible()
    expect(error).to_contain_text("no-such-norm")
    assert "Traceback" not in error.inner_text()
    expect(norm).to_have_value(norm_before)
    page.locator('button[aria-label="Dismiss error"]').click()
    expect(error).to_be_hidden()
    wait_state(root, lambda s: not s["error"], "the error cleared")

    # 7) the layer finder: type part of a name, pick with the keyboard
    finder = page.locator('input[aria-label="Find layer"]')
    finder.fill("layer3.1.conv2")
    expect(page.locator("li.fmw-finder-item")).to_have_count(1)
    finder.press("Enter")
    wait_state(root, lambda s: s["layer"] == "layer3.1.conv2", "the layer picked in the finder")
    expect(canvas).to_have_attribute("data-layer", "layer3.1.conv2")

    # 8) the predictions panel: five classes, and how to name them (random weights, no labels)
    expect(page.locator("li.fmw-prediction")).to_have_count(5)
    expect(page.locator(".fmw-predictions-note")).to_contain_text("labels=")

    # 9) with the kernel busy (a cell sleeping), colormap, page and channel still repaint
    page.evaluate("() => { const nb = window.jupyterapp.shell.currentWidget.content; nb.activeCellIndex = 3;"
                  " window.jupyterapp.commands.execute('notebook:run-cell'); }")
    deadline = time.monotonic() + 60
    while not (root / "sleeping").exists():
        assert time.monotonic() < deadline, "the sleeping cell never started"
        time.sleep(0.05)
    page.evaluate(TIMING_JS)
    draws = int(canvas.get_attribute("data-draws"))
    page.locator('select[aria-label="Colormap"]').select_option("gray")
    expect(canvas).not_to_have_attribute("data-draws", str(draws))
    label = page.locator(".fmw-maps-view .fmw-page-label").inner_text()
    page.locator('.fmw-maps-view button[aria-label="Next page"]').click()
    expect(page.locator(".fmw-maps-view .fmw-page-label")).not_to_have_text(label)
    page.evaluate("(i) => window.__fmw.tile(i)", 2)
    expect(page.locator(".fmw-maps-view .fmw-tile-label")).to_have_text(str(int(canvas.get_attribute("data-first")) + 2))
    # the cell was running all along (the front end's kernel status is no witness: comm
    # messages flip it to idle and back while a cell runs)
    assert not (root / "slept").exists(), "the sleeping cell ended before the checks"
    (root / "wake").write_text("1")
    page.wait_for_function(nbdrive.IDLE_JS, timeout=60_000)
    wait_state(root, lambda s: s["cmap"] == "gray", "the colormap chosen while busy")

    # 10) filters view: a deep layer's rows and columns are labelled; a click enlarges a filter
    page.locator('button[data-view="filters"]').click()
    fcanvas = page.locator(".fmw-filters-view canvas.fmw-grid")
    expect(fcanvas).to_have_attribute("data-layer", "layer3.1.conv2")
    expect(page.locator("canvas.fmw-row-labels")).to_be_visible()
    expect(page.locator("canvas.fmw-col-labels")).to_be_visible()
    expect(page.locator(".fmw-filters-view canvas.fmw-kernels")).to_be_visible()
    page.mouse.move(0, 0)
    page.locator(".fmw-root").screenshot(path=str(artifacts / f"{app}_filters_deep.png"))

    # 11) side view: filter, map at full resolution, overlay opacity, guided backprop, Grad-CAM
    page.locator('button[data-view="side"]').click()
    expect(page.locator(".fmw-side")).to_be_visible()
    side_map = page.locator("canvas.fmw-side-map")
    state = wait_state(root, lambda s: s["view"] == "side" and s["answers"].get("_map"), "the full map")
    expect(side_map).to_have_attribute("data-channel", str(state["channel"]))
    overlay = page.locator(".fmw-side-overlay")
    before = overlay.screenshot()
    page.locator('input[aria-label="Overlay opacity"]').fill("0")
    page.wait_for_timeout(100)
    assert overlay.screenshot() != before, "the overlay opacity changed nothing visible"
    page.locator('button[aria-label="Guided backprop"]').click()
    expect(page.locator("canvas.fmw-side-gbp")).to_be_visible(timeout=nbdrive.RENDER_TIMEOUT_MS)
    page.locator('button[aria-label="Grad-CAM"]').click()
    cam = page.locator("canvas.fmw-cam")
    expect(cam).to_be_visible(timeout=nbdrive.RENDER_TIMEOUT_MS)
    expect(page.locator(".fmw-cam-legend")).to_be_visible()
    expect(page.locator(".fmw-cam-legend .fmw-legend-max")).to_have_text("1")
    cam_opacity = page.locator('input[aria-label="Grad-CAM opacity"]')
    stack = page.locator(".fmw-stack").last
    before = stack.screenshot()
    cam_opacity.fill("100")
    page.wait_for_timeout(100)
    assert stack.screenshot() != before, "the Grad-CAM opacity changed nothing visible"
    assert page.locator('input[aria-label="Overlay opacity"]').input_value() == "0", "one slider moved the other"
    page.mouse.move(0, 0)
    page.locator(".fmw-root").screenshot(path=str(artifacts / f"{app}_side.png"))

    # 12) the dark theme: the same widget, for the screenshots
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_timeout(1500)
    page.locator(".fmw-root").screenshot(path=str(artifacts / f"{app}_side_dark.png"))
    page.locator('button[data-view="maps"]').click()
    page.wait_for_timeout(300)
    page.locator(".fmw-root").screenshot(path=str(artifacts / f"{app}_maps_dark.png"))
    assert not browser.errors, browser.errors
