// Codes to colours, exactly as src/fmwidget/render.py does it (a real-browser test compares
// the canvas with save_png pixel for pixel): every item (channel or output filter) gets a
// 256-entry table from its code to an RGBA pixel, computed in float64 in the same order:
//   v = vmin + q * ((vmax - vmin) / 254)
//   channel            t = q / 254
//   channel_symmetric  t = 0.5 + v / (2 m),  m = max(|vmin|, |vmax|) of the item (0.5 if m = 0)
//   layer              t = (v - L0) / (L1 - L0)  (0 if L1 <= L0)
//   symmetric          t = 0.5 + v / (2 M)    (0.5 if M = 0)
//   colour             lut[clamp(floor(t * 255 + 0.5), 0, 255)];  code 255 (NaN) is magenta
import { hexRGB } from "./rules.js";

const LITTLE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** An RGBA pixel as the Uint32 a canvas ImageData holds (opaque). */
export function pixel(r, g, b) {
  return LITTLE ? ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0 : ((r << 24) | (g << 16) | (b << 8) | 255) >>> 0;
}

/** The layer-wide numbers the layer norms need: {low, high, big} over the finite ranges. */
export function layerStats(vmin, vmax) {
  let low = Infinity;
  let high = -Infinity;
  for (let i = 0; i < vmin.length; i++) {
    if (Number.isFinite(vmin[i])) low = Math.min(low, vmin[i]);
    if (Number.isFinite(vmax[i])) high = Math.max(high, vmax[i]);
  }
  if (low === Infinity) return { low: 0, high: 0, big: 0 };
  return { low, high, big: Math.max(Math.abs(low), Math.abs(high)) };
}

/**
 * Where code q of an item lies along the colour scale (0..1, maybe outside before clamping).
 * `slo`, `shi` are the item's range on the scale: its own, or one shared by two images.
 */
function position(norm, q, lo, hi, stats, slo, shi, shared) {
  if (!Number.isFinite(lo) || (norm === "channel" && !shared)) return q / 254;
  const v = lo + q * ((hi - lo) / 254);
  if (norm === "channel") return shi > slo ? (v - slo) / (shi - slo) : 0;
  if (norm === "channel_symmetric") {
    const m = Math.max(Math.abs(slo), Math.abs(shi));
    return m > 0 ? 0.5 + v / (2 * m) : 0.5;
  }
  if (norm === "layer") return stats.high > stats.low ? (v - stats.low) / (stats.high - stats.low) : 0;
  return stats.big > 0 ? 0.5 + v / (2 * stats.big) : 0.5;
}

/** lut index of a scale position. */
export function lutIndex(t) {
  const i = Math.floor(t * 255 + 0.5);
  return i < 0 ? 0 : i > 255 ? 255 : i;
}

/** One scale for two images' ranges: per item the lower minimum and the higher maximum. */
export function sharedScale(a, b) {
  const vmin = new Float32Array(a.vmin.length);
  const vmax = new Float32Array(a.vmin.length);
  const lower = (x, y) => (Number.isNaN(x) ? y : Number.isNaN(y) ? x : Math.min(x, y));
  const higher = (x, y) => (Number.isNaN(x) ? y : Number.isNaN(y) ? x : Math.max(x, y));
  for (let i = 0; i < vmin.length; i++) {
    vmin[i] = lower(a.vmin[i], b.vmin[i]);
    vmax[i] = higher(a.vmax[i], b.vmax[i]);
  }
  return { vmin, vmax };
}

/**
 * Colour tables of an entry's items for one style, built on demand and kept per item:
 * `tables(entry, norm, lut, nanColor, scale?)` returns `get(i) -> Uint32Array(256)`. `scale`
 * ({vmin, vmax}) normalises with other ranges than the codes' own (two images on one scale).
 */
export function colourTables(entry, norm, lut, nanColor, scale = null) {
  const s = scale || entry;
  const stats = layerStats(s.vmin, s.vmax);
  const nan = pixel(...hexRGB(nanColor));
  const built = new Map();
  return (i) => {
    let table = built.get(i);
    if (table) return table;
    table = new Uint32Array(256);
    const lo = entry.vmin[i];
    const hi = entry.vmax[i];
    for (let q = 0; q < 255; q++) {
      const k = 3 * lutIndex(position(norm, q, lo, hi, stats, s.vmin[i], s.vmax[i], !!scale));
      table[q] = pixel(lut[k], lut[k + 1], lut[k + 2]);
    }
    table[255] = nan;
    built.set(i, table);
    return table;
  };
}

/** The value a code stands for (NaN for code 255). */
export function decodeValue(entry, i, q) {
  if (q === 255) return NaN;
  const lo = entry.vmin[i];
  const hi = entry.vmax[i];
  return lo + q * ((hi - lo) / 254);
}

/**
 * First-layer filters as colour pictures: filter f's kernels for the 3 inputs (codes
 * (3, kh, kw)) -> kh*kw pixels of 128 + 127 w / s, s = its largest |w|; B, G, R inputs
 * (`bgr`) are shown flipped back to R, G, B.
 */
export function compositePixels(codes, lo, hi, bgr, nanColor) {
  const n = codes.length / 3;
  const out = new Uint32Array(n);
  const s = Math.max(Math.abs(lo), Math.abs(hi));
  const step = (hi - lo) / 254;
  const nan = pixel(...hexRGB(nanColor));
  for (let p = 0; p < n; p++) {
    const rgb = [0, 0, 0];
    let bad = false;
    for (let c = 0; c < 3; c++) {
      const q = codes[c * n + p];
      if (q === 255) bad = true;
      const v = lo + q * step;
      let x = s > 0 ? Math.floor(128 + (127 * v) / s + 0.5) : 128;
      if (Number.isNaN(x)) x = 128;
      rgb[bgr ? 2 - c : c] = x < 0 ? 0 : x > 255 ? 255 : x;
    }
    out[p] = bad ? nan : pixel(rgb[0], rgb[1], rgb[2]);
  }
  return out;
}

/** The normalisation of a difference (first − second) for the chosen one: zero at the centre. */
export function diffNorm(norm) {
  return norm.startsWith("channel") ? "channel_symmetric" : "symmetric";
}
