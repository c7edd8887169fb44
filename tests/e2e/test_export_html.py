"""``FeatureMapExplorer.to_html`` writes a page that renders offline, from file://.

The page is opened in headless Chromium with every http(s) request aborted (and recorded): the
widget must render from the files next to the page alone, with no failed request and no
uncaught page error.
"""
import re

import pytest

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import expect
except ImportError:  # the `chromium` fixture skips with the reason
    expect = None

DATA_URL = re.compile(r"^data:image/[a-z+]+;base64,.{100,}")
RENDER_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def exported_page(tmp_path_factory):
    """A ResNet-18 explorer on the sample image, exported with ``to_html``."""
    import skimage.data
    import torch
    import torchvision

    from fmwidget import FeatureMapExplorer

    torch.manual_seed(0)
    w = FeatureMapExplorer(torchvision.models.resnet18(weights=None).eval(),
                           skimage.data.chelsea())
    out = tmp_path_factory.mktemp("export") / "explorer.html"
    w.to_html(out)
    assert out.exists() and out.stat().st_size > 0, f"to_html wrote nothing to {out}"
    return out


def test_exported_html_renders_offline(chromium, browser, exported_page, artifacts):
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
    page.goto(exported_page.as_uri())

    slider = page.locator('input[type=range][aria-label="Layer"]')
    grid_img = page.locator("img.fmw-grid-img")
    expect(slider).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    expect(grid_img).to_be_visible()
    expect(grid_img).to_have_attribute("src", DATA_URL)
    page.wait_for_function(
        "() => { const i = document.querySelector('img.fmw-grid-img');"
        " return i && i.complete && i.naturalWidth > 0; }")
    expect(page.locator(".fmw-layer-name")).not_to_be_empty()
    page.screenshot(path=str(artifacts / "export.png"))

    assert not blocked, f"the exported page asked the network for: {blocked}"
    assert not failed, f"requests failed: {failed}"
    assert not browser.errors, browser.errors
