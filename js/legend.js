// Colour bar for the picture on screen: meta.legend = {min, zero|null, max, colors[16]}.
import { h, setText, show } from "./dom.js";
import { formatNumber } from "./state.js";

/**
 * Build the legend element.
 *
 * @returns {{el: HTMLElement, update: (legend: Object|null, caption?: string) => void}}
 */
export function createLegend() {
  const bar = h("div", { class: "fmw-legend-bar", "aria-hidden": "true" });
  const min = h("span", { class: "fmw-legend-min" });
  const zero = h("span", { class: "fmw-legend-zero" });
  const max = h("span", { class: "fmw-legend-max" });
  const caption = h("span", { class: "fmw-legend-caption" });
  const labels = h("div", { class: "fmw-legend-labels" }, min, zero, max);
  const el = h("div", { class: "fmw-legend", role: "img" }, caption, h("div", { class: "fmw-legend-scale" }, bar, labels));

  /**
   * Show `legend` ({min, max, zero: fraction 0..1 where value 0 sits or null, relative,
   * colors}); a relative legend (per-channel scaling) labels its ends "min" and "max"
   * because every tile has its own range (the hover shows it).
   */
  function update(legend, captionText = "") {
    const colors = (legend && legend.colors) || [];
    show(el, colors.length > 0);
    if (!colors.length) return;
    bar.style.background = `linear-gradient(to right, ${colors.join(", ")})`;
    const relative = !!legend.relative;
    setText(caption, relative ? `${captionText}, each tile its own range` : captionText);
    setText(min, relative ? "min" : formatNumber(legend.min));
    setText(max, relative ? "max" : formatNumber(legend.max));
    const at = legend.zero;
    const hasZero = !relative && typeof at === "number" && at > 0.02 && at < 0.98;
    show(zero, hasZero);
    if (hasZero) {
      zero.style.left = `${at * 100}%`;
      setText(zero, "0");
    }
    el.setAttribute(
      "aria-label",
      relative ? "colour scale: each tile from its own min to max" : `colour scale from ${min.textContent} to ${max.textContent}`,
    );
  }

  return { el, update };
}
