// The hover tooltip: an enlarged crop of the tile under the pointer (copied from the canvas
// already drawn, no round trip) and lines of text: the channel, the value under the pointer
// decoded from its code, and the channel's exact range.
import { h, setText, show } from "./dom.js";

const ZOOM_SIZE = 112;

export function createHover(ctx, root) {
  const canvas = h("canvas", { class: "fmw-hover-canvas", width: ZOOM_SIZE, height: ZOOM_SIZE });
  const label = h("div", { class: "fmw-hover-label" });
  const el = h("div", { class: "fmw-hover", role: "tooltip", hidden: true }, canvas, label);

  function hide() {
    show(el, false);
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
   * Show the tooltip at the pointer: `source` and `rect` (canvas pixels) give the crop, `text`
   * the lines (joined with newlines).
   */
  function showAt(event, source, rect, text) {
    const g = canvas.getContext("2d");
    if (g && source && rect) {
      const k = Math.min(ZOOM_SIZE / rect.w, ZOOM_SIZE / rect.h);
      canvas.width = Math.max(1, Math.round(rect.w * k));
      canvas.height = Math.max(1, Math.round(rect.h * k));
      g.imageSmoothingEnabled = false;
      g.drawImage(source, rect.x, rect.y, rect.w, rect.h, 0, 0, canvas.width, canvas.height);
    }
    show(canvas, !!(source && rect));
    setText(label, text);
    show(el, true);
    place(event);
  }

  return { el, show: showAt, hide };
}
