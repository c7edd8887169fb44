// The feature-maps view: every channel of the current page as a tile, coloured in the browser
// from the cached codes with the chosen colormap and normalisation; in the chosen order; and,
// when comparing, the second image's maps on one scale with the first and their difference.
import { h, setText, show } from "../dom.js";
import { colourTables, decodeValue, diffNorm, layerStats, sharedScale } from "../colors.js";
import { itemCodes } from "../codec.js";
import { createLegend, describe } from "../legend.js";
import { resolveStyle } from "../rules.js";
import { channelChanges, currentLayer, formatNumber, pageCount, pageItems, positionOf, ranking, versionOf } from "../state.js";
import { createGrid } from "./grid.js";
import { createPager, span } from "./pager.js";

export function createMapsView(ctx, hover, legend) {
  const { model, store } = ctx;
  const pages = createPager(ctx, "page", "fmw-page-label", (d) => ctx.request({ page: model.get("page") + d }));
  const note = h("div", { class: "fmw-note fmw-grid-note" });
  const order = h("div", { class: "fmw-note fmw-order-note", hidden: true });
  let shown = { items: [], entries: [] };

  function describeTile(which) {
    return (i, x, y) => {
      const c = shown.items[i];
      const entry = shown.entries[which];
      const codes = itemCodes(entry, c);
      const value = decodeValue(entry, c, codes[y * entry.shape[2] + x]);
      const at = entry.scale > 1 ? ` (mean of ${entry.scale}×${entry.scale})` : "";
      const lines = [`channel ${c}${which === 2 ? ", first − second" : ""}`, `value ${formatNumber(value)}${at}`,
        `range ${formatNumber(entry.vmin[c])} … ${formatNumber(entry.vmax[c])}`];
      const r = ranking(model);
      if (r) lines.push(`${r.by} ${formatNumber(r.scores[c])} (rank ${r.order.indexOf(c) + 1})`);
      return lines.join("\n");
    };
  }

  const grids = [0, 1, 2].map((which) =>
    createGrid(ctx, hover, {
      label: "Feature maps of the current page: click a tile, or use the arrow keys, to pick a channel",
      onPick: (i) => ctx.request(channelChanges(model, shown.items[i])),
      onStep: (from, step) => {
        const total = currentLayer(model).out_shape[0];
        const at = Math.min(Math.max(positionOf(model, model.get("channel")) + step, 0), total - 1);
        const r = ranking(model);
        ctx.request(channelChanges(model, r ? r.order[at] : at));
      },
      describe: describeTile(which),
      role: ["main", "second", "diff"][which],
    }),
  );
  const titles = [0, 1, 2].map(() => h("div", { class: "fmw-grid-title", hidden: true }));
  const blocks = grids.map((g, k) => h("div", { class: "fmw-grid-block" }, titles[k], g.el));
  const diffLegend = createLegend(ctx, "fmw-legend fmw-diff-legend");
  const el = h("div", { class: "fmw-view fmw-maps-view" }, h("div", { class: "fmw-pagers" }, pages.el, order), ...blocks, note, diffLegend.el);

  /** Draw the current page from the cache; false while its data are on the way. */
  function draw() {
    const info = currentLayer(model);
    if (!info) return true;
    const page = pageItems(model, info);
    const nPages = pageCount(model, info);
    const p = model.get("page");
    const r = ranking(model);
    const what = r ? `channels ranked ${page.first + 1}–${page.last + 1}` : `channels ${span(page.first, page.last)}`;
    setText(pages.label, `Page ${p + 1}/${nPages} · ${what} of ${info.out_shape[0]}`);
    pages.prev.disabled = p <= 0;
    pages.next.disabled = p >= nPages - 1;
    const sort = model.get("sort");
    show(order, sort !== "channel");
    if (sort !== "channel") {
      const label = (store.rules.rankings.find((x) => x.name === sort) || {}).label || sort;
      setText(order, r ? `Sorted by ${label}${r.label ? ` (“${r.label}”)` : ""}, highest first; hover a tile for its score` : `Sorting by ${label}…`);
    }
    const version = versionOf(model);
    const other = model.get("compare");
    const comparing = other >= 0 && other !== model.get("image_index");
    const otherVersion = comparing ? versionOf(model, other) : null;
    const items = page.items;
    const layer = info.name;
    const entries = !items || version === null ? [] : [
      store.cache.find(version, "maps", layer, items),
      comparing && otherVersion !== null ? store.cache.find(otherVersion, "maps", layer, items) : null,
      comparing && otherVersion !== null ? store.cache.find(version, "diff", layer, items, otherVersion) : null,
    ];
    const ready = !!entries[0] && (!comparing || (!!entries[1] && !!entries[2]));
    el.classList.toggle("fmw-waiting", !ready);
    if (!ready) {
      if (!entries[0]) legend.update(null);
      if (store.rules.offline && !entries[0]) setText(note, `${layer} is not in this saved page.`);
      return false;
    }
    shown = { items, entries };
    const { norm, cmap } = resolveStyle(store.rules, "maps", model.get("norm"), model.get("cmap"));
    const colormap = store.rules.cmaps.get(cmap);
    const scale = comparing ? sharedScale(entries[0], entries[1]) : null;
    const styles = [
      [norm, colormap, scale],
      [norm, colormap, scale],
      [diffNorm(norm), store.rules.cmaps.get("bwr"), null],
    ];
    const [, th, tw] = entries[0].shape;
    const avail = Math.max(64, el.clientWidth);
    const c = model.get("channel");
    const at = items.indexOf(c);
    const images = model.get("_images") || [];
    grids.forEach((grid, k) => {
      const visible = k === 0 || comparing;
      show(blocks[k], visible);
      if (!visible) return grid.clear();
      const entry = entries[k];
      const [n, cm, sc] = styles[k];
      const tables = colourTables(entry, n, cm.lut, store.rules.nanColor, sc);
      grid.draw({
        key: `${entry.key}|${items.join(",")}|${n}|${cmap}|${sc ? `${entries[0].key}/${entries[1].key}` : ""}`,
        n: items.length, th, tw, avail, fill: cm.gap,
        codesOf: (i) => itemCodes(entry, items[i]),
        tableOf: (i) => tables(items[i]),
      });
      grid.canvas.dataset.layer = layer;
      grid.canvas.dataset.first = String(page.first);
      grid.select(at >= 0 ? [at] : [], `${c}`);
    });
    show(titles[0], comparing);
    if (comparing) {
      setText(titles[0], `${(images[model.get("image_index")] || {}).label || "first"}`);
      setText(titles[1], `${(images[other] || {}).label || "second"}, on one scale with the first`);
      setText(titles[2], "Difference: first − second");
      show(titles[1], true);
      show(titles[2], true);
    }
    const scaleNote = entries[0].scale > 1
      ? `Tiles shrunk ${entries[0].scale}× (each pixel is the mean of ${entries[0].scale}×${entries[0].scale}); the side-by-side view shows a channel at full resolution.`
      : "";
    setText(note, scaleNote);
    const stats = layerStats((scale || entries[0]).vmin, (scale || entries[0]).vmax);
    legend.update(describe(norm, colormap.lut, stats, comparing ? "both images" : "channels"));
    diffLegend.update(comparing
      ? describe(diffNorm(norm), store.rules.cmaps.get("bwr").lut, layerStats(entries[2].vmin, entries[2].vmax), "first − second")
      : null);
    return true;
  }

  return { el, draw };
}
