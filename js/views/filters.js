// The filters view: the current layer's learned weights, coloured in the browser from the
// cached weight codes. A first layer (3 inputs) shows one colour composite per filter, its
// per-input kernels one click away; a depthwise layer one kernel per channel; any other layer
// a row per output filter and a column per input channel, each filter on its own scale.
import { h, setText, show } from "../dom.js";
import { colourTables, compositePixels, decodeValue, layerStats } from "../colors.js";
import { itemCodes } from "../codec.js";
import { describe } from "../legend.js";
import { resolveStyle } from "../rules.js";
import { channelChanges, currentLayer, formatNumber, hasFilters, pageCount, pageItems, weightsVersion } from "../state.js";
import { createGrid } from "./grid.js";
import { createPager, span } from "./pager.js";
import { createKernels } from "./kernels.js";

const DETAIL_PX = 300;

/** The cached filters of the current layer that hold output filters `items`, or null. */
export function filtersEntry(ctx, items) {
  const { store, model } = ctx;
  const version = weightsVersion(model);
  return version === null ? null : store.cache.find(version, "filters", model.get("layer"), items);
}

export function createFiltersView(ctx, hover, legend) {
  const { model, store } = ctx;
  const pages = createPager(ctx, "page", "fmw-page-label", (d) => ctx.request({ page: model.get("page") + d }));
  const inPages = createPager(ctx, "input page", "fmw-in-page-label", (d) => ctx.request({ in_page: model.get("in_page") + d }));
  const rowLabels = h("canvas", { class: "fmw-row-labels", "aria-hidden": "true" });
  const colLabels = h("canvas", { class: "fmw-col-labels", "aria-hidden": "true" });
  const empty = h("div", { class: "fmw-empty", hidden: true });
  const detail = createKernels(ctx, hover);
  let state = null; // what is drawn: {entry, first, mode, ins, cols}

  const grid = createGrid(ctx, hover, {
    label: "Filters of the current page: click one, or use the arrow keys, to pick a channel and enlarge its filter",
    onPick: (i) => ctx.request(channelChanges(model, state.first + rowOf(i))),
    onStep: (from, step) => {
      const total = currentLayer(model).weight_shape[0];
      const perRow = state.mode === "rows" ? state.cols : 1;
      const delta = state.mode === "rows" ? Math.sign(step) * (Math.abs(step) >= state.cols ? 1 : 0) : step;
      const c = Math.min(Math.max(state.first + Math.floor(from / perRow) + delta, 0), total - 1);
      ctx.request(channelChanges(model, c));
    },
    describe: (i, x, y) => {
      const f = state.first + rowOf(i);
      const codes = itemCodes(state.entry, f);
      const [, I, kh, kw] = state.entry.shape;
      const input = state.mode === "rows" ? state.ins[i % state.cols] : 0;
      const lines = [`filter ${f}`];
      if (state.mode === "composite") {
        lines.push("colour composite of its 3 input kernels");
      } else {
        if (state.mode === "rows") lines.push(`input channel ${input}`);
        lines.push(`weight ${formatNumber(decodeValue(state.entry, f, codes[input * kh * kw + y * kw + x]))}`);
      }
      lines.push(`filter range ${formatNumber(state.entry.vmin[f])} … ${formatNumber(state.entry.vmax[f])}`);
      return lines.join("\n");
    },
  });
  const body = h("div", { class: "fmw-filters-body" }, colLabels, h("div", { class: "fmw-filters-rows" }, rowLabels, grid.el));
  const el = h(
    "div",
    { class: "fmw-view fmw-filters-view" },
    h("div", { class: "fmw-pagers" }, pages.el, inPages.el),
    empty,
    h("div", { class: "fmw-filters-main" }, body, detail.el),
  );

  function rowOf(i) {
    return state.mode === "rows" ? Math.floor(i / state.cols) : i;
  }

  function labels(canvas, width, height, items) {
    canvas.width = width;
    canvas.height = height;
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, width, height);
    g.font = "10px sans-serif";
    g.fillStyle = getComputedStyle(el).color;
    g.textBaseline = "middle";
    for (const [text, x, y, align] of items) {
      g.textAlign = align;
      g.fillText(text, x, y);
    }
  }

  function draw() {
    const info = currentLayer(model);
    if (!hasFilters(info)) {
      show(empty, true);
      setText(empty, info ? `${info.name} (${info.type}) has no filters to show. Choose a conv layer or the feature maps view.` : "");
      show(body, false);
      show(pages.el, false);
      show(inPages.el, false);
      detail.clear();
      legend.update(null);
      return true;
    }
    show(empty, false);
    show(pages.el, true);
    const [O, I, kh, kw] = info.weight_shape;
    const items = pageItems(model, info);
    const nPages = pageCount(model, info);
    const page = model.get("page");
    setText(pages.label, `Page ${page + 1}/${nPages} · filters ${span(items.first, items.last)} of ${O}`);
    pages.prev.disabled = page <= 0;
    pages.next.disabled = page >= nPages - 1;
    const entry = filtersEntry(ctx, items.items);
    el.classList.toggle("fmw-waiting", !entry);
    if (!entry) {
      legend.update(null);
      return false;
    }
    show(body, true);
    const { norm, cmap } = resolveStyle(store.rules, "filters", model.get("norm"), model.get("cmap"));
    const colormap = store.rules.cmaps.get(cmap);
    const tables = colourTables(entry, norm, colormap.lut, store.rules.nanColor);
    const n = items.last - items.first + 1;
    // the enlarged filter goes beside the grid when there is room for both, else below it
    const beside = el.clientWidth >= 700 ? DETAIL_PX : 0;
    const avail = Math.max(64, el.clientWidth - 40 - beside);
    const c = model.get("channel");
    const mode = entry.depthwise ? "depthwise" : I === 3 ? "composite" : "rows";
    const inPage = store.rules.inPage;
    const ins = [];
    if (mode === "rows") for (let k = model.get("in_page") * inPage; k < Math.min(I, (model.get("in_page") + 1) * inPage); k++) ins.push(k);
    state = { entry, first: items.first, mode, ins, cols: ins.length };
    show(inPages.el, mode === "rows" && I > inPage);
    if (mode === "rows") {
      const nIn = Math.ceil(I / inPage);
      setText(inPages.label, `Inputs ${span(ins[0], ins[ins.length - 1])} of ${I}`);
      inPages.prev.disabled = model.get("in_page") <= 0;
      inPages.next.disabled = model.get("in_page") >= nIn - 1;
    }
    const key = `${entry.key}|${items.first}|${items.last}|${norm}|${cmap}|${mode}|${model.get("in_page")}`;
    if (mode === "composite") {
      grid.draw({
        key, n, th: kh, tw: kw, avail, fill: store.rules.compositeGap,
        codesOf: (i) => compositePixels(itemCodes(entry, items.first + i), entry.vmin[items.first + i], entry.vmax[items.first + i], entry.bgr, store.rules.nanColor),
        tableOf: () => null,
      });
    } else if (mode === "depthwise") {
      grid.draw({ key, n, th: kh, tw: kw, avail, fill: colormap.gap, codesOf: (i) => itemCodes(entry, items.first + i), tableOf: (i) => tables(items.first + i) });
    } else {
      grid.draw({
        key, n: n * ins.length, th: kh, tw: kw, avail, cols: ins.length, gap: 1, fill: colormap.gap,
        codesOf: (i) => {
          const f = items.first + Math.floor(i / ins.length);
          const k = ins[i % ins.length];
          return itemCodes(entry, f).subarray(k * kh * kw, (k + 1) * kh * kw);
        },
        tableOf: (i) => tables(items.first + Math.floor(i / ins.length)),
      });
    }
    const layout = grid.layout;
    grid.canvas.dataset.layer = entry.layer;
    if (mode === "rows") {
      const stepY = kh * layout.zoom + layout.gap;
      const stepX = kw * layout.zoom + layout.gap;
      const every = Math.max(1, Math.ceil(12 / stepY));
      const rows = [];
      for (let r = 0; r < n; r += every) rows.push([String(items.first + r), 34, layout.gap + r * stepY + (kh * layout.zoom) / 2, "right"]);
      labels(rowLabels, 36, layout.height, rows);
      const everyX = Math.max(1, Math.ceil(24 / stepX));
      const cols = [];
      for (let k = 0; k < ins.length; k += everyX) cols.push([String(ins[k]), 36 + layout.gap + k * stepX + (kw * layout.zoom) / 2, 8, "center"]);
      labels(colLabels, 36 + layout.width, 16, cols);
      show(rowLabels, true);
      show(colLabels, true);
      grid.select(c >= items.first && c <= items.last ? Array.from(ins, (_, k) => (c - items.first) * ins.length + k) : [], "");
    } else {
      show(rowLabels, false);
      show(colLabels, false);
      grid.select(c >= items.first && c <= items.last ? [c - items.first] : [], `${c}`);
    }
    if (c >= items.first && c <= items.last) detail.draw(entry, c, { norm, cmap, ins: mode === "rows" ? ins : null, avail: DETAIL_PX - 20 });
    else detail.clear();
    const scale = describe(norm, colormap.lut, layerStats(entry.vmin, entry.vmax), "filters");
    legend.update(scale);
    return true;
  }

  return { el, draw };
}
