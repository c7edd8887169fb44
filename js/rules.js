// The rules, as Python sends them in `_config` (src/fmwidget/rules.py): names and labels of
// views, normalisations and colormaps, the colormaps' lookup tables, page sizes and what
// "auto" means. Nothing here is a list of its own.
import { bytes } from "./codec.js";

/**
 * The decoded `_config`: {views, norms, cmaps: Map(name -> {label, lut: Uint8Array(768), gap}),
 * cam: {name, lut}, auto, pageSizes, rankings, maxUpload, inPage, levels, nanCode, nanColor,
 * compositeGap, cacheBytes, offline, exportNote}.
 */
export function readRules(config) {
  const c = config || {};
  const cmaps = new Map();
  for (const entry of c.cmaps || []) {
    cmaps.set(entry.name, { label: entry.label, lut: entry.lut ? bytes(entry.lut) : null, gap: entry.gap || null });
  }
  return {
    format: c.format,
    views: c.views || [],
    norms: c.norms || [],
    cmaps,
    cam: c.cam_cmap ? { name: c.cam_cmap.name, lut: bytes(c.cam_cmap.lut) } : null,
    auto: c.auto || {},
    pageSizes: c.page_sizes || [],
    rankings: c.rankings || [],
    // numbers only Python sets: `_config` is always there before the widget renders
    maxUpload: c.max_upload_bytes,
    inPage: c.in_page,
    levels: c.levels,
    nanCode: c.nan_code,
    nanColor: c.nan_color,
    compositeGap: c.composite_gap,
    cacheBytes: c.cache_bytes,
    offline: c.offline || "",
    exportNote: c.export_note || "",
  };
}

/** The normalisation and colormap "auto" stands for in `view`. */
export function resolveStyle(rules, view, norm, cmap) {
  const auto = rules.auto[view] || rules.auto.maps || {};
  return { norm: norm === "auto" ? auto.norm : norm, cmap: cmap === "auto" ? auto.cmap : cmap };
}

/** "#rrggbb" as [r, g, b]. */
export function hexRGB(color) {
  return [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
}
