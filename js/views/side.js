// Side-by-side view: the selected channel's filter (one tile per input channel, plus RGB for
// a first layer), its feature map enlarged, and the input image with the map laid over it.
import { h, setSrc, setText, show, suppressShortcuts } from "../dom.js";
import { currentLayer, formatRange } from "../state.js";
import { displayScale } from "../tiles.js";
import { createAttribution } from "./attribution.js";

const PANEL_SIZE = 240;

function panel(title, ...children) {
  const heading = h("div", { class: "fmw-panel-title" }, title);
  return { heading, el: h("figure", { class: "fmw-panel" }, heading, ...children) };
}

/** Integer magnification that brings a picture's long side near `target` pixels. */
function fitScale(width, height, target = PANEL_SIZE) {
  const long = Math.max(width || 1, height || 1);
  return long >= target ? target / long : Math.max(1, Math.floor(target / long));
}

function describeInputs(meta, info) {
  const inputs = (meta.in_channels || []).filter((c) => c >= 0);
  const rgb = (meta.in_channels || []).includes(-1) ? " + RGB" : "";
  if (meta.depthwise || (info && info.depthwise) || !inputs.length) return "depthwise: one kernel per channel";
  const total = info && info.weight_shape ? info.weight_shape[1] : inputs.length;
  const shown =
    inputs.length < total
      ? `inputs ${inputs[0]}–${inputs[inputs.length - 1]} of ${total}`
      : `${total} input channel${total === 1 ? "" : "s"}`;
  return shown + rgb;
}

/**
 * Build the side-by-side view.
 *
 * @param {Object} ctx widget context
 * @param {{attach: Function}} hover the shared hover zoom
 */
export function createSideView(ctx, hover) {
  const { model } = ctx;
  const filterImg = h("img", { class: "fmw-side-filter", alt: "filter of the selected channel", draggable: "false" });
  const filterNote = h("div", { class: "fmw-note" });
  const filter = panel("Filter", h("div", { class: "fmw-picture" }, filterImg), filterNote);

  const mapImg = h("img", { class: "fmw-side-map", alt: "feature map of the selected channel", draggable: "false" });
  const mapNote = h("div", { class: "fmw-note" });
  const map = panel("Feature map", h("div", { class: "fmw-picture" }, mapImg), mapNote);

  const inputImg = h("img", { class: "fmw-side-input", alt: "input image as the model saw it", draggable: "false" });
  const overlayMap = h("img", { class: "fmw-side-overlay-map", alt: "", draggable: "false" });
  const stack = h("div", { class: "fmw-side-overlay fmw-stack" }, inputImg, overlayMap);
  const opacity = suppressShortcuts(
    h("input", { type: "range", class: "fmw-opacity", "aria-label": "Overlay opacity", min: 0, max: 100, step: 1, value: 60 }),
  );
  const overlay = panel(
    "Input + map",
    stack,
    h("label", { class: "fmw-control" }, h("span", { class: "fmw-label" }, "Overlay opacity"), opacity),
  );

  const attribution = createAttribution(ctx);
  const el = h(
    "div",
    { class: "fmw-side", hidden: true },
    h("div", { class: "fmw-panels" }, filter.el, map.el, overlay.el, ...attribution.panels),
  );

  function applyOpacity() {
    el.style.setProperty("--fmw-overlay-opacity", String(Number(opacity.value) / 100));
  }
  ctx.listen(opacity, "input", applyOpacity);
  applyOpacity();

  const side = () => model.get("_side") || {};
  let filterMeta = {};
  let filterUrl = null;
  hover.attach(filterImg, () => filterMeta);

  function showFilter(f) {
    const url = f ? f.url : "";
    if (url === filterUrl) return;
    filterUrl = url;
    if (!f) {
      filterMeta = {};
      setSrc(filterImg, "");
      return;
    }
    // Python lays the filter out already: a near-square grid of the input channels' kernels,
    // or, for a first layer, its RGB composite beside its 3 kernels.
    filterMeta = f.meta || {};
    setSrc(filterImg, f.url);
    if (filterMeta.width) filterImg.style.width = `${filterMeta.width * displayScale(filterMeta, 64, PANEL_SIZE)}px`;
  }

  function update() {
    const s = side();
    const info = currentLayer(model);
    const channel = s.channel ?? model.get("channel");
    const name = s.layer || model.get("layer");

    const f = s.filter;
    showFilter(f);
    show(filterImg, !!f);
    setText(filter.heading, `Filter ${channel}`);
    setText(filterNote, f ? describeInputs(f.meta || {}, info) : `${info ? info.type : "This layer"} has no filter weights`);

    const m = s.map;
    setSrc(mapImg, m ? m.url : "");
    setSrc(overlayMap, m ? m.url : "");
    const mm = (m && m.meta) || {};
    if (mm.width) mapImg.style.width = `${mm.width * fitScale(mm.width, mm.height)}px`;
    setText(map.heading, `Feature map ${channel}`);
    const ranges = mm.ranges && mm.ranges[0];
    setText(mapNote, mm.width ? `${name} · ${mm.width}×${mm.height} · ${formatRange(ranges)}` : "");

    const input = model.get("_input_png") || "";
    setSrc(inputImg, input);
    attribution.update();
  }

  ctx.on("_side _input_png layer channel", update);
  update();

  function setVisible(visible) {
    show(el, visible);
    if (visible) attribution.opened();
  }

  return { el, update, setVisible };
}
