// Controls: layer slider with previous/next, channel input, view switch, and the
// normalisation / colormap / channels-per-page selects.
import { h, setText, suppressShortcuts } from "./dom.js";
import {
  CMAPS,
  NORMS,
  PAGE_SIZES,
  VIEWS,
  channelChanges,
  channelCount,
  currentLayer,
  hasFilters,
  layerChanges,
  layerIndex,
  layers,
  pageSizeChanges,
  viewChanges,
} from "./state.js";

const VIEW_LABELS = { maps: "Feature maps", filters: "Filters", side: "Side by side" };
const NORM_LABELS = { auto: "auto", channel: "per channel", layer: "per layer", symmetric: "symmetric (±max)" };
const CMAP_LABELS = { auto: "auto", gray: "gray", viridis: "viridis", bwr: "blue-white-red" };

function select(label, values, names) {
  const el = suppressShortcuts(h("select", { "aria-label": label, class: "fmw-select" }));
  for (const value of values) el.append(h("option", { value }, names ? names[value] : String(value)));
  return h("label", { class: "fmw-control" }, h("span", { class: "fmw-label" }, label), el);
}

/**
 * Build the controls.
 *
 * @param {Object} ctx widget context (model, on, listen, request)
 */
export function createControls(ctx) {
  const { model } = ctx;
  const prev = h("button", { type: "button", class: "fmw-btn", "aria-label": "Previous layer", title: "Previous layer" }, "◀");
  const next = h("button", { type: "button", class: "fmw-btn", "aria-label": "Next layer", title: "Next layer" }, "▶");
  const slider = suppressShortcuts(
    h("input", { type: "range", class: "fmw-layer-slider", "aria-label": "Layer", min: 0, max: 0, step: 1, value: 0 }),
  );
  const channel = suppressShortcuts(
    h("input", { type: "number", class: "fmw-channel", "aria-label": "Channel", min: 0, step: 1, value: 0 }),
  );
  const channelMax = h("span", { class: "fmw-channel-max" });
  const viewButtons = VIEWS.map((view) =>
    h("button", { type: "button", class: "fmw-btn fmw-view-btn", "data-view": view, "aria-pressed": "false" }, VIEW_LABELS[view]),
  );
  const normLabel = select("Normalisation", NORMS, NORM_LABELS);
  const cmapLabel = select("Colormap", CMAPS, CMAP_LABELS);
  const sizeLabel = select("Channels per page", PAGE_SIZES);
  const norm = normLabel.querySelector("select");
  const cmap = cmapLabel.querySelector("select");
  const pageSize = sizeLabel.querySelector("select");

  const el = h(
    "div",
    { class: "fmw-controls" },
    h("div", { class: "fmw-row fmw-layer-row" }, h("span", { class: "fmw-label" }, "Layer"), prev, slider, next),
    h(
      "div",
      { class: "fmw-row" },
      h("div", { class: "fmw-views", role: "group", "aria-label": "View" }, ...viewButtons),
      h("label", { class: "fmw-control" }, h("span", { class: "fmw-label" }, "Channel"), channel, channelMax),
    ),
    h("div", { class: "fmw-row" }, normLabel, cmapLabel, sizeLabel),
  );

  // A drag fires many input events: each one updates the model locally (the header follows at
  // once); the first goes to the kernel at once, then at most one update per animation frame
  // (see widget.js).
  ctx.listen(slider, "input", () => ctx.request(layerChanges(model, Number(slider.value)), { coalesce: true }));
  ctx.listen(prev, "click", () => ctx.request(layerChanges(model, layerIndex(model) - 1)));
  ctx.listen(next, "click", () => ctx.request(layerChanges(model, layerIndex(model) + 1)));

  function commitChannel() {
    if (channel.value !== "") ctx.request(channelChanges(model, channel.value));
    // show the value actually used (clamped to the layer's channels) even while focused
    channel.value = String(model.get("channel"));
  }
  ctx.listen(channel, "change", commitChannel);
  ctx.listen(channel, "keydown", (event) => {
    if (event.key === "Enter") commitChannel();
  });
  for (const button of viewButtons) {
    ctx.listen(button, "click", () => ctx.request(viewChanges(model, button.dataset.view)));
  }
  ctx.listen(norm, "change", () => ctx.request({ norm: norm.value }));
  ctx.listen(cmap, "change", () => ctx.request({ cmap: cmap.value }));
  ctx.listen(pageSize, "change", () => ctx.request(pageSizeChanges(model, Number(pageSize.value))));

  function update() {
    const all = layers(model);
    const index = layerIndex(model);
    const info = currentLayer(model);
    slider.max = String(Math.max(0, all.length - 1));
    slider.value = String(Math.max(0, index));
    slider.setAttribute("aria-valuetext", info ? `${info.name} (${info.type})` : "");
    slider.disabled = all.length === 0;
    prev.disabled = index <= 0;
    next.disabled = index < 0 || index >= all.length - 1;

    const count = channelCount(info);
    channel.max = String(Math.max(0, count - 1));
    if (document.activeElement !== channel || channel.value === "") channel.value = String(model.get("channel"));
    setText(channelMax, count ? `of ${count}` : "");

    const view = model.get("view");
    for (const button of viewButtons) {
      const active = button.dataset.view === view;
      button.setAttribute("aria-pressed", String(active));
      button.classList.toggle("fmw-active", active);
    }
    const filters = viewButtons[1];
    filters.disabled = !hasFilters(info) && view !== "filters";
    filters.title = hasFilters(info) ? "Learned filters (weights)" : "This layer has no 4-D weight to show";
    norm.value = model.get("norm");
    cmap.value = model.get("cmap");
    pageSize.value = String(model.get("page_size"));
    sizeLabel.hidden = view === "side";
  }

  ctx.on("_layers layer channel view norm cmap page_size", update);
  update();
  return { el, update };
}
