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

/** The capture version of image `index` (default: the one shown), or null until Python has run it. */
export function versionOf(model, index = model.get("image_index")) {
  const version = (model.get("_versions") || [])[index];
  return version === null || version === undefined ? null : version;
}

/** The version of the model's weights the filters view shows (bumped by `set_image`). */
export function weightsVersion(model) {
  return (model.get("_header") || {}).weights_version ?? null;
}

/** The ranking of the current layer and image the `sort` trait asks for, or null. */
export function ranking(model) {
  const sort = model.get("sort");
  const r = model.get("_ranking") || {};
  if (sort === "channel" || r.by !== sort || r.layer !== model.get("layer") || r.version !== versionOf(model)) return null;
  return r;
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

/**
 * The items on the current page, in the order shown: `{first, last, items}` (first and last
 * are positions in the order, `items` the channels); sorted when the maps view is sorted.
 * `items` is null while a sort the page asks for has not arrived.
 */
export function pageItems(model, info = currentLayer(model)) {
  const size = model.get("page_size");
  const first = model.get("page") * size;
  const last = Math.min(itemCount(model, info), first + size) - 1;
  const items = [];
  if (model.get("view") === "maps" && model.get("sort") !== "channel") {
    const r = ranking(model);
    if (!r) return { first, last, items: null };
    for (let k = first; k <= last; k++) items.push(r.order[k]);
  } else {
    for (let k = first; k <= last; k++) items.push(k);
  }
  return { first, last, items };
}

/** Where `channel` is in the order shown (its position in the grid). */
export function positionOf(model, channel) {
  const r = model.get("view") === "maps" ? ranking(model) : null;
  return r ? r.order.indexOf(channel) : channel;
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
  // a sorted view's order for the new layer comes with Python's answer, which sets its page
  if (model.get("sort") !== "channel" && model.get("view") === "maps") return { layer: info.name, channel, in_page: 0 };
  const page = Math.min(Math.floor(channel / size), Math.max(1, Math.ceil(channelCount(info) / size)) - 1);
  return { layer: info.name, channel, page, in_page: 0 };
}

/** Trait values that switch to `view`, with the page that shows the selected channel. */
export function viewChanges(model, view) {
  const at = view === "filters" ? model.get("channel") : positionOf(model, model.get("channel"));
  return { view, page: Math.floor(Math.max(0, at) / model.get("page_size")) };
}

/** Trait values that select `channel` (already validated) and show its page. */
export function channelChanges(model, channel) {
  return { channel, page: Math.floor(Math.max(0, positionOf(model, channel)) / model.get("page_size")) };
}

/** Trait values for a new page size, keeping the selected channel on screen. */
export function pageSizeChanges(model, size) {
  return { page_size: size, page: Math.floor(Math.max(0, positionOf(model, model.get("channel"))) / size) };
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
