"""``FeatureMapExplorer.to_html`` writes a page that works offline, from file://, with no kernel.

The page is opened in headless Chromium with every http(s) request aborted (and recorded). The
widget must draw from the grids in the file alone: the slider, views, channels, pages,
colormaps and normalisation all work, and the controls that need Python are disabled with a
reason. No failed request and no uncaught page error.
"""
import pytest

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import expect
except ImportError:  # the `chromium` fixture skips with the reason
    expect = None

RENDER_TIMEOUT_MS = 30_000


def _explorer():
    import skimage.data
    import torch
    import torchvision

    from fmwidget import FeatureMapExplorer

    torch.manual_seed(0)
    return FeatureMapExplorer(torchvision.models.resnet18(weights=None).eval(), skimage.data.chelsea(), page_size=32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A ResNet-18 explorer exported whole, and one exported beyond a (lowered) size cap."""
    import fmwidget.export

    folder = tmp_path_factory.mktemp("export")
    with _explorer() as w:
        whole = w.to_html(folder / "explorer.html")
        names = w.layer_names
        w.layer = names[5]
        cap = fmwidget.export.HTML_CAP_BYTES
        fmwidget.export.HTML_CAP_BYTES = 1 << 20
        try:
            part = w.to_html(folder / "part.html")
        finally:
            fmwidget.export.HTML_CAP_BYTES = cap
    return {"whole": whole, "part": part, "names": names}


def _open_offline(browser, path):
    blocked, failed = [], []

    def only_files(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    browser.context.route("**/*", only_files)
    page = browser.page
    page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
    page.goto(path.as_uri())
    expect(page.locator(".fmw-maps-view canvas.fmw-grid[data-draws]")).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    return page, blocked, failed


def test_exported_html_works_offline(chromium, browser, exported, artifacts):
    page, blocked, failed = _open_offline(browser, exported["whole"])
    names = exported["names"]
    canvas = page.locator(".fmw-maps-view canvas.fmw-grid")
    expect(canvas).to_have_attribute("data-layer", names[0])
    expect(page.locator(".fmw-notes")).to_contain_text("no Python kernel")

    # the slider and the buttons move through layers drawn from the file
    slider = page.locator('input[aria-label="Layer"]')
    slider.focus()
    slider.press("ArrowRight")
    expect(canvas).to_have_attribute("data-layer", names[1])
    page.locator('button[aria-label="Next layer"]').click()
    expect(canvas).to_have_attribute("data-layer", names[2])
    expect(page.locator(".fmw-layer-name")).to_have_text(names[2])

    # colormap, normalisation and pages repaint
    for label, value in (("Colormap", "magma"), ("Normalisation", "symmetric")):
        draws = canvas.get_attribute("data-draws")
        page.locator(f'select[aria-label="{label}"]').select_option(value)
        expect(canvas).not_to_have_attribute("data-draws", draws)
    expect(page.locator(".fmw-root > .fmw-legend .fmw-legend-zero")).to_have_text("0")
    page.locator('.fmw-maps-view button[aria-label="Next page"]').click()
    expect(page.locator(".fmw-maps-view .fmw-page-label")).to_contain_text("Page 2/")
    expect(canvas).to_have_attribute("data-first", "32")

    # a click on a tile picks its channel
    box = canvas.bounding_box()
    cols = int(canvas.get_attribute("data-cols"))
    tile = (box["width"] - 2) / cols
    canvas.click(position={"x": 2 + tile * 1.5, "y": 2 + tile * 0.5})
    expect(page.locator('input[aria-label="Channel"]')).to_have_value("33")
    expect(page.locator(".fmw-maps-view .fmw-tile-label")).to_have_text("33")

    # the filters view and the side view draw from the file too
    page.locator('button[data-view="filters"]').click()
    expect(page.locator(".fmw-filters-view canvas.fmw-grid")).to_have_attribute("data-layer", names[2])
    page.locator('button[data-view="side"]').click()
    expect(page.locator("canvas.fmw-side-map")).to_have_attribute("data-channel", "33")
    # conv1's maps are shrunk in the grids; its full resolution is not in the file
    page.locator('button[aria-label="Previous layer"]').click()
    page.locator('button[aria-label="Previous layer"]').click()
    expect(page.locator("canvas.fmw-side-map")).to_have_attribute("data-layer", names[0])
    expect(page.locator(".fmw-side")).to_contain_text("full resolution needs the kernel")

    # what needs Python is off, and says why
    for name in ("Guided backprop", "Grad-CAM"):
        expect(page.locator(f'button[aria-label="{name}"]')).to_be_disabled()
    expect(page.locator(".fmw-offline-note")).to_be_visible()
    expect(page.locator(".fmw-offline-note")).to_contain_text("need the Python kernel")
    page.screenshot(path=str(artifacts / "export.png"))

    assert not blocked, f"the exported page asked the network for: {blocked}"
    assert not failed, f"requests failed: {failed}"
    assert not browser.errors, browser.errors


def test_export_beyond_the_cap_holds_the_neighbours_and_says_so(chromium, browser, exported):
    page, blocked, failed = _open_offline(browser, exported["part"])
    names = exported["names"]
    canvas = page.locator(".fmw-maps-view canvas.fmw-grid")
    expect(canvas).to_have_attribute("data-layer", names[5])
    expect(page.locator(".fmw-notes")).to_contain_text("holds layers 4 to 8")
    page.locator('button[aria-label="Next layer"]').click()
    expect(canvas).to_have_attribute("data-layer", names[6])
    slider = page.locator('input[aria-label="Layer"]')
    slider.evaluate("(s) => { s.value = '0'; s.dispatchEvent(new Event('input', {bubbles: true})); }")
    expect(page.locator(".fmw-grid-note")).to_contain_text("not in this saved page")
    assert not blocked and not failed and not browser.errors, (blocked, failed, browser.errors)
