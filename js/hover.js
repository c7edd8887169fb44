// The hover zoom: a crop of the tile under the pointer, drawn on a canvas from the picture
// already in the page (no round trip to Python), with "ch N  min..max" from meta.ranges.
import { h, setText, show } from "./dom.js";
import { formatRange } from "./state.js";
import { pictureCoords, tileAt, tileRect } from "./tiles.js";

const ZOOM_SIZE = 112;

/**
 * The single `.fmw-hover` element of a widget.
 *
 * @param {HTMLElement} root element the tooltip is positioned in
 * @returns {{el: HTMLElement, attach: Function}}
 */
export function createHover(ctx, root) {
  const canvas = h("canvas", { class: "fmw-hover-canvas", width: ZOOM_SIZE, height: ZOOM_SIZE });
  const label = h("div", { class: "fmw-hover-label" });
  const el = h("div", { class: "fmw-hover", role: "tooltip", hidden: true }, canvas, label);

  function hide() {
    show(el, false);
  }

  function draw(img, rect) {
    const g = canvas.getContext("2d");
    if (!g) return;
    const k = Math.min(ZOOM_SIZE / rect.w, ZOOM_SIZE / rect.h);
    const w = Math.max(1, Math.round(rect.w * k));
    const hgt = Math.max(1, Math.round(rect.h * k));
    canvas.width = w;
    canvas.height = hgt;
    g.imageSmoothingEnabled = false;
    g.clearRect(0, 0, w, hgt);
    g.drawImage(img, rect.x, rect.y, rect.w, rect.h, 0, 0, w, hgt);
  }

  function place(event) {
    const box = root.getBoundingClientRect();
    const tip = el.getBoundingClientRect();
    let x = event.clientX - box.left + 16;
    let y = event.clientY - box.top + 16;
    if (x + tip.width > box.width) x = event.clientX - box.left - tip.width - 12;
    if (y + tip.height > box.height) y = Math.max(0, event.clientY - box.top - tip.height - 12);
    el.style.left = `${Math.max(0, x)}px`;
    el.style.top = `${Math.max(0, y)}px`;
  }

  /**
   * Show the zoom for tiles of `img`, whose metadata `getMeta()` returns.
   * `describe(meta, index)` gives the label's first part (defaults to "ch N").
   */
  function attach(img, getMeta, describe = defaultDescription) {
    ctx.listen(img, "pointermove", (event) => {
      const meta = getMeta();
      const at = img.complete && img.naturalWidth ? pictureCoords(img, event) : null;
      const index = at ? tileAt(meta, at.x, at.y) : -1;
      const channel = index >= 0 && meta.channels ? meta.channels[index] : -1;
      if (index < 0 || channel === undefined || channel < 0) return hide();
      draw(img, tileRect(meta, index));
      const range = meta.ranges ? meta.ranges[index] : null;
      setText(label, `${describe(meta, index)}  ${formatRange(range)}`.trim());
      show(el, true);
      place(event);
    });
    ctx.listen(img, "pointerleave", hide);
  }

  return { el, attach, hide };
}

function defaultDescription(meta, index) {
  const channel = meta.channels[index];
  if (meta.kind !== "filters" || !meta.in_channels) return `ch ${channel}`;
  const input = meta.in_channels[index % meta.cols];
  if (input === undefined || input === null) return `ch ${channel}`;
  return `ch ${channel}  in ${input < 0 ? "RGB" : input}`;
}
