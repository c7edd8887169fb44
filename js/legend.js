// The colour scale of the picture on screen, drawn from the colormap's own lookup table, with
// what its ends mean for the normalisation in use (the same words as save_png's legends).
import { h, setText, show } from "./dom.js";
import { formatNumber } from "./state.js";

/**
 * Describe a scale: `{lut, low, high, zero, caption}` for a normalisation of items whose
 * ranges the `stats` ({low, high, big}) summarise.
 */
export function describe(norm, lut, stats, what) {
  // Compared images share each channel's scale: say so, not "each its own".
  const shared = what === "both images";
  const each = shared ? "each channel, one scale over both images," : `${what}: each its own`;
  if (norm === "channel") return { lut, low: "min", high: "max", zero: null, caption: `${each} min to max` };
  if (norm === "channel_symmetric") {
    return { lut, low: "−max|v|", high: "+max|v|", zero: 0.5, caption: `${each}${shared ? "" : " scale,"} 0 in the middle` };
  }
  if (norm === "layer") {
    const { low, high } = stats;
    const zero = high > low && low < 0 && high > 0 ? -low / (high - low) : null;
    return { lut, low: formatNumber(low), high: formatNumber(high), zero, caption: `${what}: one scale for the layer` };
  }
  return { lut, low: formatNumber(-stats.big), high: formatNumber(stats.big), zero: 0.5, caption: `${what}: one scale, 0 in the middle` };
}

/** A legend element; `update(scale | null)` redraws it. Several may exist (one per panel). */
export function createLegend(ctx, cls = "fmw-legend") {
  const bar = h("canvas", { class: "fmw-legend-bar", width: 256, height: 1, "aria-hidden": "true" });
  const min = h("span", { class: "fmw-legend-min" });
  const zero = h("span", { class: "fmw-legend-zero" });
  const max = h("span", { class: "fmw-legend-max" });
  const caption = h("span", { class: "fmw-legend-caption" });
  const el = h(
    "div",
    { class: cls, role: "img" },
    h("div", { class: "fmw-legend-scale" }, bar, h("div", { class: "fmw-legend-labels" }, min, zero, max)),
    caption,
  );
  let drawn = null;

  function update(scale) {
    show(el, !!scale);
    if (!scale) return;
    if (drawn !== scale.lut) {
      const g = bar.getContext("2d");
      const image = g.createImageData(256, 1);
      for (let i = 0; i < 256; i++) {
        image.data.set([scale.lut[3 * i], scale.lut[3 * i + 1], scale.lut[3 * i + 2], 255], 4 * i);
      }
      g.putImageData(image, 0, 0);
      drawn = scale.lut;
    }
    setText(min, scale.low);
    setText(max, scale.high);
    setText(caption, scale.caption);
    const hasZero = typeof scale.zero === "number" && scale.zero > 0.02 && scale.zero < 0.98;
    show(zero, hasZero);
    if (hasZero) {
      zero.style.left = `${scale.zero * 100}%`;
      setText(zero, "0");
    }
    el.setAttribute("aria-label", `colour scale from ${scale.low} to ${scale.high}; ${scale.caption}`);
  }
  return { el, update };
}
