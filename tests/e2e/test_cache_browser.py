"""The browser's cache of grids stays within its bound, in a real JupyterLab with ResNet-50.

Every layer of ResNet-50 is stepped through twice, in the page, and the cache's size (the root's
``data-cache-bytes``) is read after each step: once with the default bound (64 MiB), once with
a bound small enough (4 MiB) that the cache must evict, and keeps drawing.
"""
import json
import textwrap

import nbdrive
import pytest

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import expect
except ImportError:  # the `chromium` fixture skips with the reason
    expect = None

CELL = textwrap.dedent("""\
    import torch, torchvision, skimage.data
    import fmwidget.rules
    from fmwidget import FeatureMapExplorer
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    fmwidget.rules.BROWSER_CACHE_BYTES = {limit}
    w = FeatureMapExplorer(model, skimage.data.chelsea())
    w
""")

STEP_ALL_JS = """async ([rounds]) => {
  const root = document.querySelector('.fmw-root');
  const slider = root.querySelector('input[aria-label="Layer"]');
  const canvas = root.querySelector('.fmw-maps-view canvas.fmw-grid');
  const n = Number(slider.max) + 1;
  const seen = [];
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < n; i++) {
      slider.value = String(i);
      slider.dispatchEvent(new Event('input', { bubbles: true }));
      const start = performance.now();
      // the widget redraws at the next frame: wait for the header to name layer i, then until
      // the canvas shows it (its grid arrived, or was cached)
      const header = root.querySelector('.fmw-layer-position');
      while (header.textContent !== `${i + 1}/${n}` || canvas.dataset.layer !== root.querySelector('.fmw-layer-name').textContent) {
        if (performance.now() - start > 30000) throw new Error(`layer ${i} never drawn`);
        await new Promise((res) => setTimeout(res, 5));
      }
      seen.push({ bytes: Number(root.dataset.cacheBytes), count: root.fmwStore.cache.count });
    }
  }
  return { n, seen, limit: root.fmwStore.cache.limit };
}"""


@pytest.mark.parametrize("limit", [64 << 20, 4 << 20], ids=["default", "small"])
def test_cache_stays_within_its_bound_over_every_resnet50_layer_twice(jupyter_server, browser, timings, limit):
    if jupyter_server["app"] != "lab":
        pytest.skip("the cache is the same code in both front ends; JupyterLab shows it")
    root, page = jupyter_server["root"], browser.page
    nbdrive.write_notebook(root / "cache.ipynb", [CELL.format(limit=limit)])
    nbdrive.open_and_run(browser, jupyter_server, "cache.ipynb")
    got = page.evaluate(STEP_ALL_JS, [2])
    assert got["limit"] == limit
    sizes = [s["bytes"] for s in got["seen"]]
    assert len(sizes) == 2 * got["n"] and got["n"] > 50
    assert max(sizes) <= limit, f"the cache grew to {max(sizes)} bytes, over its bound {limit}"
    assert min(sizes) > 0
    if limit < 8 << 20:
        # the bound was reached, so old grids were dropped (the count went down at some step)
        counts = [s["count"] for s in got["seen"]]
        assert any(b < a for a, b in zip(counts, counts[1:])), counts
    timings[f"cache_{limit >> 20}MiB_max_bytes"] = max(sizes)
    timings[f"cache_{limit >> 20}MiB_steps"] = len(sizes)
    expect(page.locator(".fmw-maps-view canvas.fmw-grid")).to_be_visible()
    assert not browser.errors, browser.errors
    print(json.dumps({"limit": limit, "max": max(sizes)}))
