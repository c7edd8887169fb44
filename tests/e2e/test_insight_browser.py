"""Many images, compare, sort and scan in a real JupyterLab and Notebook 7, driven by Chromium.

A person drops an image file on the widget (and a file that is not an image), compares two
images, sorts a layer's channels, scans a set of images and stops the scan with the widget's
Stop button while the cell runs, then opens one of a channel's top images. Each step is checked
in the DOM and on the kernel side (the observer's JSON file).
"""
import base64
import textwrap

import nbdrive
import pytest
from nbdrive import read_state, wait_state

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import expect
except ImportError:  # the `chromium` fixture skips with the reason
    expect = None

N_SCAN = 400  # images in the scan: enough that it is still running when Stop is clicked

CELL = textwrap.dedent("""\
    import skimage.data, torch
    from PIL import Image
    from fmwidget import FeatureMapExplorer, sample_image
    Image.fromarray(skimage.data.coffee()).save("coffee.png")
    w = FeatureMapExplorer("squeezenet", [sample_image(), skimage.data.astronaut()], layer="features.3.expand3x3")
    _watch(w)
    w
""")
SCAN_CELL = textwrap.dedent(f"""\
    torch.manual_seed(0)
    many = [torch.rand(3, 227, 227) * 255 - 120 for _ in range({N_SCAN})]
    result = w.scan(many, layers=["features.0", "features.3.expand3x3"], k=3, batch_size=4)
""")

DROP_JS = """([name, type, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  const root = document.querySelector('.fmw-root');
  root.dispatchEvent(new DragEvent('dragover', { bubbles: true, cancelable: true, dataTransfer: data }));
  root.dispatchEvent(new DragEvent('drop', { bubbles: true, cancelable: true, dataTransfer: data }));
}"""


def _run_unawaited(page, index):
    page.evaluate("(i) => { const nb = window.jupyterapp.shell.currentWidget.content; nb.activeCellIndex = i;"
                  " window.jupyterapp.commands.execute('notebook:run-cell'); }", index)


def test_images_compare_sort_and_scan(jupyter_server, browser, artifacts):
    app, root, page = jupyter_server["app"], jupyter_server["root"], browser.page
    nbdrive.write_notebook(root / "insight.ipynb", [nbdrive.OBSERVER + CELL, SCAN_CELL])
    page.goto(jupyter_server["url"]("insight.ipynb"))
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    page.wait_for_function(nbdrive.IDLE_JS, timeout=nbdrive.KERNEL_TIMEOUT_S * 1000)
    nbdrive.run_cell(page, 0)
    page.wait_for_selector(".fmw-root canvas.fmw-grid[data-draws]", timeout=nbdrive.RENDER_TIMEOUT_MS)
    state = wait_state(root, lambda s: s["answers"].get("_maps"), "the first grid")
    expect(page.locator("button.fmw-thumb")).to_have_count(2)

    # 1) drop an image file on the widget: it is added in Python, checked as img is, and shown
    first_version = state["answers"]["_maps"]["version"]
    png = base64.b64encode((root / "coffee.png").read_bytes()).decode()
    page.evaluate(DROP_JS, ["coffee.png", "image/png", png])
    state = wait_state(root, lambda s: len(s["images"]) == 3 and s["image_index"] == 2, "the dropped image shown")
    assert state["images"][2] == "coffee.png"
    expect(page.locator("button.fmw-thumb")).to_have_count(3)
    expect(page.locator('button.fmw-thumb[data-index="2"]')).to_have_attribute("aria-pressed", "true")
    wait_state(root, lambda s: s["answers"]["_maps"]["version"] != first_version, "its maps")
    expect(page.locator(".fmw-maps-view canvas.fmw-grid")).to_have_attribute("data-layer", "features.3.expand3x3")

    # ... and a file that is not an image is refused, clearly, and changes nothing
    junk = base64.b64encode(b"this is not a picture at all").decode()
    page.evaluate(DROP_JS, ["notes.png", "image/png", junk])
    error = page.locator('.fmw-error[role="alert"]')
    expect(error).to_be_visible()
    expect(error).to_contain_text("notes.png")
    assert len(read_state(root)["images"]) == 3 and read_state(root)["image_index"] == 2
    page.locator('button[aria-label="Dismiss error"]').click()

    # 2) compare: a click on the cat's thumbnail, then "Compare with" the astronaut
    page.locator('button.fmw-thumb[data-index="0"]').click()
    wait_state(root, lambda s: s["image_index"] == 0, "the cat shown")
    page.locator('select[aria-label="Compare with"]').select_option("1")
    wait_state(root, lambda s: s["compare"] == 1 and s["compared"] == ["diff", "maps"], "compare")
    for cls in ("fmw-grid", "fmw-grid-second", "fmw-grid-diff"):
        expect(page.locator(f".fmw-maps-view canvas.{cls}")).to_be_visible()
    expect(page.locator(".fmw-diff-legend")).to_contain_text("first − second")
    page.mouse.move(0, 0)
    page.locator(".fmw-root").screenshot(path=str(artifacts / f"{app}_compare.png"))

    # 3) sort by max activation: the first tile is the best-ranked channel
    page.locator('select[aria-label="Compare with"]').select_option("-1")
    page.locator('select[aria-label="Sort by"]').select_option("max")
    wait_state(root, lambda s: s["sort"] == "max" and s["ranking"] == "max", "the ranking")
    expect(page.locator(".fmw-order-note")).to_contain_text("Sorted by max activation")
    canvas = page.locator(".fmw-maps-view canvas.fmw-grid")
    box = canvas.bounding_box()
    cols = int(canvas.get_attribute("data-cols"))
    tile = (box["width"] - 2) / cols
    page.mouse.move(box["x"] + 2 + tile / 2, box["y"] + 2 + tile / 2)
    expect(page.locator(".fmw-hover-label")).to_contain_text("(rank 1)")
    page.locator(".fmw-root").screenshot(path=str(artifacts / f"{app}_sorted.png"))
    page.mouse.move(0, 0)

    # 4) scan a set of images, and stop it from the widget while the cell runs
    _run_unawaited(page, 1)
    stop = page.locator('button[aria-label="Stop scan"]')
    expect(stop).to_be_visible(timeout=nbdrive.RENDER_TIMEOUT_MS)
    wait_state(root, lambda s: s["scan"].get("running") and s["scan"].get("done", 0) >= 8, "the scan under way")
    stop.click()
    page.wait_for_function(nbdrive.IDLE_JS, timeout=nbdrive.RENDER_TIMEOUT_MS)
    state = wait_state(root, lambda s: s["scan"].get("running") is False, "the scan ended")
    # Stop interrupts the kernel; the scan takes the KeyboardInterrupt as a clean stop
    assert state["scan"]["stopped"] and state["scan"]["reason"] == "KeyboardInterrupt", state["scan"]
    assert 0 < state["scan"]["done"] < N_SCAN, state["scan"]
    expect(page.locator(".fmw-scan")).to_contain_text("stopped")

    # 5) the side view shows the channel's top images; a click opens one
    page.locator('select[aria-label="Sort by"]').select_option("channel")
    page.locator('button[data-view="side"]').click()
    state = wait_state(root, lambda s: s["view"] == "side" and s["top"] == 3, "the top images")
    items = page.locator("button.fmw-top-item")
    expect(items).to_have_count(3)
    page.locator(".fmw-root").screenshot(path=str(artifacts / f"{app}_top.png"))
    before = len(state["images"])
    items.first.click()
    wait_state(root, lambda s: len(s["images"]) == before + 1 and s["image_index"] == before, "the top image opened")
    assert not browser.errors, browser.errors
