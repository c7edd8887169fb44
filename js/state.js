// Reading the selection traits and the layer list; the trait changes a control makes.
// Pure functions of the model: no DOM, no module-level state.

/** The `_layers` list (never null). */
export function layers(model) {
  return model.get("_layers") || [];
}

/** Index of the current layer in `_layers`, or -1. */
export function layerIndex(model) {
  const name = model.get("layer");
  return layers(model).findIndex((l) => l.name === name);
}

/** The current layer's info, or null. */
export function currentLayer(model) {
  return layers(model)[layerIndex(model)] || null;
}

/** Output channels of a layer. */
export function channelCount(info) {
  return info && info.out_shape ? Number(info.out_shape[0]) : 0;
}

/** Whether the layer has a conv weight the filters view can show. */
export function hasFilters(info) {
  return !!(info && info.weight_shape && info.weight_shape.length === 4);
}

/** How many items (channels, or output filters) the current view pages through. */
export function itemCount(model, info = currentLayer(model)) {
  if (model.get("view") === "filters" && hasFilters(info)) return info.weight_shape[0];
  return channelCount(info);
}

/** The items (first, last) on the current page. */
export function pageItems(model, info = currentLayer(model)) {
  const size = model.get("page_size");
  const first = model.get("page") * size;
  return { first, last: Math.min(itemCount(model, info), first + size) - 1 };
}

/** Pages of the current view. */
export function pageCount(model, info = currentLayer(model)) {
  return Math.max(1, Math.ceil(itemCount(model, info) / model.get("page_size")));
}

function clamp(value, lo, hi) {
  return Math.min(Math.max(value, lo), hi);
}

/**
 * The trait values that make the layer at `index` current, keeping the rest valid as Python
 * does (`_on_layer`): the same channel if it exists there, else 0; its page; input page 0.
 */
export function layerChanges(model, index) {
  const all = layers(model);
  const info = all[clamp(index, 0, all.length - 1)];
  if (!info) return {};
  const channel = model.get("channel") < channelCount(info) ? model.get("channel") : 0;
  const size = model.get("page_size");
  const page = Math.min(Math.floor(channel / size), Math.max(1, Math.ceil(channelCount(info) / size)) - 1);
  return { layer: info.name, channel, page, in_page: 0 };
}

/** Trait values that switch to `view`, with the page that shows the selected channel. */
export function viewChanges(model, view) {
  return { view, page: Math.floor(model.get("channel") / model.get("page_size")) };
}

/** Trait values that select `channel` (already validated) and show its page. */
export function channelChanges(model, channel) {
  return { channel, page: Math.floor(channel / model.get("page_size")) };
}

/** Trait values for a new page size, keeping the selected channel on screen. */
export function pageSizeChanges(model, size) {
  return { page_size: size, page: Math.floor(model.get("channel") / size) };
}

/** "64×55×55" for [64, 55, 55]; "—" for null. */
export function formatShape(shape) {
  return shape && shape.length ? shape.join("×") : "—";
}

/** A short, readable number: 3 significant digits, an exponent only when very small or large. */
export function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "nan";
  if (!Number.isFinite(value)) return value > 0 ? "inf" : "-inf";
  if (value === 0) return "0";
  const abs = Math.abs(value);
  if (abs >= 1e4 || abs < 1e-3) return value.toExponential(2);
  return String(Number(value.toPrecision(3)));
}
