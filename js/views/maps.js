// The feature-maps view: every channel of the current page as a tile, coloured in the browser
// from the cached codes with the chosen colormap and normalisation.
import { h, setText, show } from "../dom.js";
import { colourTables, decodeValue, layerStats } from "../colors.js";
import { itemCodes } from "../codec.js";
import { describe } from "../legend.js";
import { resolveStyle } from "../rules.js";
import { channelChanges, currentLayer, formatNumber, pageCount, pageItems } from "../state.js";
import { createGrid } from "./grid.js";
import { createPager, span } from "./pager.js";

/** The cached maps grid that holds the current page, or null. */
export function mapsEntry(ctx, info, items) {
  const { store, model } = ctx;
  return store.cache.find(store.version, "maps", model.get("layer"), items.first, items.last);
}

export function createMapsView(ctx, hover, legend) {
  const { model, store } = ctx;
  const pages = createPager(ctx, "page", "fmw-page-label", (d) => ctx.request({ page: model.get("page") + d }));
  const note = h("div", { class: "fmw-note fmw-grid-note" });
  let entry = null;
  let first = 0;

  const grid = createGrid(ctx, hover, {
    label: "Feature maps of the current page: click a tile, or use the arrow keys, to pick a channel",
    onPick: (i) => ctx.request(channelChanges(model, first + i)),
    onStep: (from, step) => {
      const info = currentLayer(model);
      const c = Math.min(Math.max(first + from + step, 0), info.out_shape[0] - 1);
      ctx.request(channelChanges(model, c));
    },
    describe: (i, x, y) => {
      const c = first + i;
      const codes = itemCodes(entry, c);
      const tw = entry.shape[2];
      const value = decodeValue(entry, c, codes[y * tw + x]);
      const at = entry.scale > 1 ? ` (mean of ${entry.scale}×${entry.scale})` : "";
      return `channel ${c}\nvalue ${formatNumber(value)}${at}\nrange ${formatNumber(entry.vmin[c])} … ${formatNumber(entry.vmax[c])}`;
    },
  });
  const el = h("div", { class: "fmw-view fmw-maps-view" }, h("div", { class: "fmw-pagers" }, pages.el), grid.el, note);

  /** Draw the current page from the cache; false while its grid is on the way. */
  function draw() {
    const info = currentLayer(model);
    if (!info) return true;
    const items = pageItems(model, info);
    const nPages = pageCount(model, info);
    const page = model.get("page");
    setText(pages.label, `Page ${page + 1}/${nPages} · channels ${span(items.first, items.last)} of ${info.out_shape[0]}`);
    pages.prev.disabled = page <= 0;
    pages.next.disabled = page >= nPages - 1;
    entry = mapsEntry(ctx, info, items);
    el.classList.toggle("fmw-waiting", !entry);
    if (!entry) {
      legend.update(null);
      setText(note, store.rules.offline ? `${info.name} is not in this saved page.` : "");
      return false;
    }
    first = items.first;
    const { norm, cmap } = resolveStyle(store.rules, "maps", model.get("norm"), model.get("cmap"));
    const colormap = store.rules.cmaps.get(cmap);
    const tables = colourTables(entry, norm, colormap.lut, store.rules.nanColor);
    const [, th, tw] = entry.shape;
    grid.draw({
      key: `${entry.key}|${items.first}|${items.last}|${norm}|${cmap}`,
      n: items.last - items.first + 1,
      th,
      tw,
      avail: Math.max(64, el.clientWidth),
      fill: colormap.gap,
      codesOf: (i) => itemCodes(entry, first + i),
      tableOf: (i) => tables(first + i),
    });
    grid.canvas.dataset.layer = entry.layer;
    grid.canvas.dataset.first = String(items.first);
    const c = model.get("channel");
    grid.select(c >= items.first && c <= items.last ? [c - items.first] : [], `${c}`);
    setText(note, entry.scale > 1 ? `Tiles shrunk ${entry.scale}× (each pixel is the mean of ${entry.scale}×${entry.scale}); the side-by-side view shows a channel at full resolution.` : "");
    legend.update(describe(norm, colormap.lut, layerStats(entry.vmin, entry.vmax), "channels"));
    return true;
  }

  return { el, draw };
}
