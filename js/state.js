// Reading the synced traits and deriving what the views need from them.
// Pure functions of the model: no DOM, no module-level state.

export const VIEWS = ["maps", "filters", "side"];
export const NORMS = ["auto", "channel", "layer", "symmetric"];
export const CMAPS = ["auto", "gray", "viridis", "bwr"];
export const PAGE_SIZES = [16, 32, 64, 128, 256];
export const IN_PAGE_SIZE = 64;

/** The `_layers` list (never null). */
export function layers(model) {
  return model.get("_layers") || [];
}

/** Index of the current layer in `_layers`, or -1. */
export function layerIndex(model) {
  const name = model.get("layer");
  return layers(model).findIndex((l) => l.name === name);
}

/** The current layer's info dict, or null. */
export function currentLayer(model) {
  return layers(model)[layerIndex(model)] || null;
}

/** Output channels of a layer (C of out_shape), 0 when unknown. */
export function channelCount(info) {
  const shape = info && info.out_shape;
  return shape && shape.length ? Number(shape[0]) : 0;
}

/** Whether the layer has a weight that the filters view can show. */
export function hasFilters(info) {
  return !!(info && info.weight_shape && info.weight_shape.length === 4);
}

/** What "auto" means for a view, as documented in docs/design.md. */
export function resolvedNorm(norm, view) {
  if (norm !== "auto") return norm;
  return view === "filters" ? "symmetric" : "channel";
}

export function resolvedCmap(cmap, view) {
  if (cmap !== "auto") return cmap;
  return view === "filters" ? "bwr" : "viridis";
}

function clamp(value, lo, hi) {
  return Math.min(Math.max(value, lo), hi);
}

/**
 * The trait values that make the layer at `index` current while keeping the rest valid:
 * the channel is clamped to the new layer's channels and the pages follow it.
 */
export function layerChanges(model, index) {
  const all = layers(model);
  const info = all[clamp(index, 0, all.length - 1)];
  if (!info) return {};
  // the same adjustments Python makes (_widget.py _on_layer), so it does not redraw twice
  const channel = model.get("channel") < channelCount(info) ? model.get("channel") : 0;
  return { layer: info.name, channel, page: Math.floor(channel / model.get("page_size")), in_page: 0 };
}

/** Trait values that switch to `view`, with the page that shows the selected channel. */
export function viewChanges(model, view) {
  return { view, page: Math.floor(model.get("channel") / model.get("page_size")) };
}

/** Trait values that select `channel` (clamped) and show the page it is on. */
export function channelChanges(model, channel) {
  const count = channelCount(currentLayer(model));
  const value = clamp(Math.round(Number(channel) || 0), 0, Math.max(0, count - 1));
  return { channel: value, page: Math.floor(value / model.get("page_size")) };
}

/** Trait values for a new page size, keeping the selected channel on screen. */
export function pageSizeChanges(model, size) {
  return { page_size: size, page: Math.floor(model.get("channel") / size) };
}

function metaMatches(meta, model, view) {
  const norm = model.get("norm");
  const cmap = model.get("cmap");
  const normOk = typeof meta.norm !== "string" || meta.norm === norm || meta.norm === resolvedNorm(norm, view);
  const cmapOk = typeof meta.cmap !== "string" || meta.cmap === cmap || meta.cmap === resolvedCmap(cmap, view);
  return normOk && cmapOk;
}

/** Whether a grid picture's `meta` is the one the current traits ask for. */
export function gridMatches(meta, model) {
  const view = model.get("view");
  if (!meta || meta.layer !== model.get("layer") || meta.kind !== view || meta.page !== model.get("page")) return false;
  if (view === "filters" && meta.in_page !== undefined && meta.in_page !== model.get("in_page")) return false;
  const shown = (meta.channels || []).filter((c) => c >= 0);
  if (shown.length && Math.min(...shown) !== meta.page * model.get("page_size")) return false;
  return metaMatches(meta, model, view);
}

/**
 * The grid picture `_grid_meta` names: `{url, meta}`, with `url` "" when this page does not
 * hold it (the kernel counted on a picture the page never got; ask for it again).
 */
export function namedGrid(model, pictures) {
  const meta = model.get("_grid_meta") || {};
  const entry = meta.picture ? pictures.get(meta.picture) : null;
  if (entry) return { url: entry.url, meta };
  const own = !meta.picture || model.get("_grid_id") === meta.picture;
  return { url: own ? model.get("_grid") || "" : "", meta };
}

/**
 * The grid picture for the current traits, or null while there is none yet: the kernel's
 * answer once it is here, before that a picture it sent ahead for exactly these traits.
 */
export function currentGrid(model, pictures, named = namedGrid(model, pictures)) {
  if (gridMatches(named.meta, model)) return named.url ? named : null;
  const ahead = pictures.find((meta) => gridMatches(meta, model));
  return ahead ? { url: ahead.url, meta: ahead.meta } : null;
}

/**
 * Whether this page has no picture yet for the current traits: no grid picture it holds
 * matches them (see `currentGrid`), or `_side` is for another layer or channel. Used only to
 * decide when to show "loading".
 */
export function displayIsStale(model, pictures) {
  const view = model.get("view");
  const layer = model.get("layer");
  if (view === "side") {
    const side = model.get("_side") || {};
    const mapMeta = (side.map && side.map.meta) || {};
    return side.layer !== layer || side.channel !== model.get("channel") || !metaMatches(mapMeta, model, "maps");
  }
  if (view === "filters" && !hasFilters(currentLayer(model))) return false;
  return currentGrid(model, pictures) === null;
}

/** "64×55×55" for [64, 55, 55]; "—" for null. */
export function formatShape(shape) {
  return shape && shape.length ? shape.join("×") : "—";
}

/** A short, readable number: 3 significant digits, exponent only when very small or large. */
export function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "nan";
  if (!Number.isFinite(value)) return value > 0 ? "inf" : "-inf";
  if (value === 0) return "0";
  const abs = Math.abs(value);
  if (abs >= 1e4 || abs < 1e-3) return value.toExponential(2);
  return String(Number(value.toPrecision(3)));
}

/** "min..max" of a tile from `meta.ranges`. */
export function formatRange(range) {
  if (!range) return "";
  return `${formatNumber(range[0])}..${formatNumber(range[1])}`;
}
