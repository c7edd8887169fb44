// The side-by-side view: the selected channel's filter, its feature map at full resolution,
// the input with the map laid over it, and the attribution panels.
import { h, setSrc, setText, show, suppressShortcuts } from "../dom.js";
import { colourTables, decodeValue, diffNorm, layerStats, sharedScale } from "../colors.js";
import { itemCodes } from "../codec.js";
import { drawPlane } from "../draw.js";
import { createLegend, describe } from "../legend.js";
import { resolveStyle } from "../rules.js";
import { currentLayer, formatNumber, hasFilters, versionOf } from "../state.js";
import { createAttribution } from "./attribution.js";
import { createTopStrip } from "./top.js";
import { createKernels } from "./kernels.js";
import { filtersEntry } from "./filters.js";

const PANEL_PX = 280;

function panel(title, ...children) {
  const heading = h("div", { class: "fmw-panel-title" }, title);
  return { heading, el: h("figure", { class: "fmw-panel" }, heading, ...children) };
}

/** The full-resolution map of `channel` if cached, else its (shrunk) tile from the maps grid. */
function mapSource(ctx, version, layer, channel, kind = "map", other = undefined) {
  const { store } = ctx;
  if (version === null) return null;
  const full = store.cache.find(version, kind, layer, [channel], other);
  if (full) return { entry: full, codes: itemCodes(full, channel), h: full.shape[1], w: full.shape[2], scale: 1 };
  const grid = store.cache.find(version, kind === "map" ? "maps" : "diff", layer, [channel], other);
  if (!grid) return null;
  return { entry: grid, codes: itemCodes(grid, channel), h: grid.shape[1], w: grid.shape[2], scale: grid.scale || 1 };
}

export function createSideView(ctx, hover, mainLegend) {
  const { model, store } = ctx;
  const kernels = createKernels(ctx, hover, { title: false });
  const filterNote = h("div", { class: "fmw-note" });
  const filterLegend = createLegend(ctx, "fmw-legend fmw-panel-legend");
  const filter = panel("Filter", kernels.el, filterNote, filterLegend.el);

  const mapCanvas = h("canvas", { class: "fmw-side-map" });
  const mapNote = h("div", { class: "fmw-note" });
  const mapLegend = createLegend(ctx, "fmw-legend fmw-panel-legend");
  const map = panel("Feature map", h("div", { class: "fmw-picture" }, mapCanvas), mapNote, mapLegend.el);

  const input = h("img", { class: "fmw-side-input", alt: "input image as the model saw it", draggable: "false" });
  const overlayCanvas = h("canvas", { class: "fmw-side-overlay-map" });
  const stack = h("div", { class: "fmw-side-overlay fmw-stack" }, input, overlayCanvas);
  const opacity = suppressShortcuts(
    h("input", { type: "range", class: "fmw-opacity", "aria-label": "Overlay opacity", min: 0, max: 100, step: 1, value: 60 }),
  );
  const overlay = panel(
    "Input + map",
    stack,
    h("label", { class: "fmw-control" }, h("span", { class: "fmw-label" }, "Overlay opacity"), opacity),
  );
  // comparing: the second image's map on one scale with the first, and their difference
  const secondCanvas = h("canvas", { class: "fmw-side-map-second" });
  const secondLegend = createLegend(ctx, "fmw-legend fmw-panel-legend");
  const second = panel("Second image", h("div", { class: "fmw-picture" }, secondCanvas), secondLegend.el);
  const diffCanvas = h("canvas", { class: "fmw-side-map-diff" });
  const diffLegend = createLegend(ctx, "fmw-legend fmw-panel-legend");
  const diff = panel("Difference", h("div", { class: "fmw-picture" }, diffCanvas), diffLegend.el);
  const top = createTopStrip(ctx);
  const attribution = createAttribution(ctx);
  const el = h(
    "div",
    { class: "fmw-view fmw-side" },
    h("div", { class: "fmw-panels" }, filter.el, map.el, second.el, diff.el, overlay.el, ...attribution.panels),
    top.el,
  );

  function applyOpacity() {
    overlayCanvas.style.opacity = String(Number(opacity.value) / 100);
  }
  ctx.listen(opacity, "input", applyOpacity);
  applyOpacity();

  let shownMap = null;
  ctx.listen(mapCanvas, "pointermove", (event) => {
    if (!shownMap) return;
    const rect = mapCanvas.getBoundingClientRect();
    const x = Math.floor(((event.clientX - rect.left) / rect.width) * shownMap.w);
    const y = Math.floor(((event.clientY - rect.top) / rect.height) * shownMap.h);
    if (x < 0 || y < 0 || x >= shownMap.w || y >= shownMap.h) return hover.hide();
    const value = decodeValue(shownMap.entry, shownMap.channel, shownMap.codes[y * shownMap.w + x]);
    const where = shownMap.scale > 1 ? `(${x * shownMap.scale}, ${y * shownMap.scale}), mean of ${shownMap.scale}×${shownMap.scale}` : `(${x}, ${y})`;
    hover.show(event, null, null, `channel ${shownMap.channel} at ${where}\nvalue ${formatNumber(value)}`);
  });
  ctx.listen(mapCanvas, "pointerleave", () => hover.hide());

  function draw() {
    const info = currentLayer(model);
    if (!info) return true;
    const c = model.get("channel");
    const layer = info.name;
    mainLegend.update(null); // every panel has its own legend here
    let ready = true;

    setText(filter.heading, `Filter ${c}`);
    if (hasFilters(info)) {
      const f = filtersEntry(ctx, [c]);
      if (f) {
        const { norm, cmap } = resolveStyle(store.rules, "filters", model.get("norm"), model.get("cmap"));
        kernels.draw(f, c, { norm, cmap, avail: PANEL_PX });
        const colormap = store.rules.cmaps.get(cmap);
        filterLegend.update(describe(norm, colormap.lut, layerStats(f.vmin, f.vmax), "filters"));
        setText(filterNote, "");
      } else {
        ready = false;
      }
    } else {
      kernels.clear();
      filterLegend.update(null);
      setText(filterNote, `${info.type} has no filter weights.`);
    }

    setText(map.heading, `Feature map ${c}`);
    const src = mapSource(ctx, versionOf(model), layer, c);
    const other = model.get("compare");
    const comparing = other >= 0 && other !== model.get("image_index");
    const otherVersion = comparing ? versionOf(model, other) : null;
    const srcB = comparing ? mapSource(ctx, otherVersion, layer, c) : null;
    const srcD = comparing && otherVersion !== null ? mapSource(ctx, versionOf(model), layer, c, "map_diff", otherVersion) : null;
    show(second.el, comparing);
    show(diff.el, comparing);
    show(overlay.el, !comparing);
    if (comparing && (!srcB || !srcD)) ready = false;
    if (!src) {
      ready = false;
    } else {
      const { norm, cmap } = resolveStyle(store.rules, "side", model.get("norm"), model.get("cmap"));
      const colormap = store.rules.cmaps.get(cmap);
      const scale = srcB ? sharedScale(src.entry, srcB.entry) : null;
      const table = colourTables(src.entry, norm, colormap.lut, store.rules.nanColor, scale)(c);
      if (srcB && srcD) {
        const images = model.get("_images") || [];
        const zoomB = Math.max(1, Math.floor(PANEL_PX / Math.max(srcB.h, srcB.w)));
        drawPlane(secondCanvas, srcB.codes, srcB.h, srcB.w, zoomB, colourTables(srcB.entry, norm, colormap.lut, store.rules.nanColor, scale)(c));
        setText(second.heading, `${(images[other] || {}).label || "second image"}: map ${c}`);
        const both = describe(norm, colormap.lut, layerStats(scale.vmin, scale.vmax), "both images");
        if (norm === "channel") Object.assign(both, { low: formatNumber(scale.vmin[c]), high: formatNumber(scale.vmax[c]), caption: `channel ${c} of both images: min to max` });
        secondLegend.update(both);
        const dn = diffNorm(norm);
        const bwr = store.rules.cmaps.get("bwr");
        drawPlane(diffCanvas, srcD.codes, srcD.h, srcD.w, Math.max(1, Math.floor(PANEL_PX / Math.max(srcD.h, srcD.w))), colourTables(srcD.entry, dn, bwr.lut, store.rules.nanColor)(c));
        setText(diff.heading, `Difference ${c}: first − second`);
        diffLegend.update(describe(dn, bwr.lut, layerStats(srcD.entry.vmin, srcD.entry.vmax), "first − second"));
      }
      const zoom = Math.max(1, Math.floor(PANEL_PX / Math.max(src.h, src.w)));
      drawPlane(mapCanvas, src.codes, src.h, src.w, zoom, table);
      drawPlane(overlayCanvas, src.codes, src.h, src.w, 1, table);
      mapCanvas.dataset.layer = layer;
      mapCanvas.dataset.channel = String(c);
      shownMap = { ...src, channel: c };
      const ranges = scale || src.entry;
      const own = describe(norm, colormap.lut, layerStats(ranges.vmin, ranges.vmax), scale ? "both images" : "channel");
      if (norm === "channel") Object.assign(own, { low: formatNumber(ranges.vmin[c]), high: formatNumber(ranges.vmax[c]), caption: `channel ${c}${scale ? " of both images" : ""}: min to max` });
      mapLegend.update(own);
      const part = src.scale > 1
        ? `shown shrunk ${src.scale}× (${src.h}×${src.w}); ${store.rules.offline ? "full resolution needs the kernel" : "full resolution on the way"}`
        : `${src.h}×${src.w}`;
      setText(mapNote, `${layer} · ${part} · range ${formatNumber(src.entry.vmin[c])} … ${formatNumber(src.entry.vmax[c])}`);
      if (src.scale > 1 && !store.rules.offline) ready = false;
    }
    // the picture of the image shown: not one left from the previous image while it is on the way
    const current = (model.get("_header") || {}).version === versionOf(model);
    setSrc(input, current ? model.get("_input_png") || "" : "");
    attribution.update();
    top.update();
    return ready;
  }

  return { el, draw };
}
