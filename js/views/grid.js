// A grid of tiles on one canvas, shared by the maps, filters and depthwise views: layout for
// the width it has, the selected tile's outline and number, clicks, keyboard, and hover.
import { h, setText, show, suppressShortcuts } from "../dom.js";
import { gridLayout, tileAt, tileRect } from "../layout.js";
import { clearTail, commit, prepare, putTile } from "../draw.js";

/**
 * @param {Object} ctx widget context
 * @param {Object} hover the shared hover tooltip
 * @param {Object} opts {label: aria label, onPick(index), describe(index, x, y) -> text, role}
 *   role "main" (default) gives the DOM contract's classes (`canvas.fmw-grid`,
 *   `.fmw-tile-selected`, `.fmw-tile-label`); another role (a compared image's grid) gives
 *   `fmw-grid-<role>` and so on, so that the contract's selectors stay unique.
 */
export function createGrid(ctx, hover, opts) {
  const suffix = opts.role && opts.role !== "main" ? `-${opts.role}` : "";
  const canvas = suppressShortcuts(
    h("canvas", { class: `fmw-canvas-grid fmw-grid${suffix}`, tabindex: "0", role: "img", "aria-label": opts.label }),
  );
  const outline = h("div", { class: `fmw-outline fmw-tile-selected${suffix}`, "aria-hidden": "true", hidden: true });
  const number = h("div", { class: `fmw-outline-label fmw-tile-label${suffix}`, "aria-hidden": "true", hidden: true });
  const inner = h("div", { class: "fmw-grid-inner" }, canvas, outline, number);
  const frame = h("div", { class: "fmw-grid-frame" }, inner);
  let shown = null; // {layout, th, tw, n, selected}

  /**
   * Draw `n` tiles of th x tw: `codesOf(i)` and `tableOf(i)` (null when the codes are pixels).
   * `key` names what is drawn: the same key is not drawn again (only the outline moves).
   */
  function draw({ key, n, th, tw, avail, cols = null, gap, fill, codesOf, tableOf }) {
    const layout = gridLayout(n, th, tw, avail, { cols, gap });
    const fullKey = `${key}|${layout.zoom}|${layout.cols}`;
    if (!shown || shown.key !== fullKey) {
      const target = prepare(canvas, layout.width, layout.height, fill);
      for (let i = 0; i < n; i++) putTile(target, layout, th, tw, i, codesOf(i), tableOf(i));
      clearTail(target, layout, th, tw, n);
      commit(target);
      canvas.dataset.cols = String(layout.cols);
      canvas.dataset.zoom = String(layout.zoom);
      canvas.dataset.avail = String(avail);
      canvas.dataset.draws = String(Number(canvas.dataset.draws || 0) + 1);
    }
    shown = { key: fullKey, layout, th, tw, n, selected: shown ? shown.selected : [] };
    show(frame, true);
  }

  /** Outline the tiles `indices` (a row of filters, or one map) and label them `text`. */
  function select(indices, text) {
    if (!shown) return;
    shown.selected = indices;
    const rects = indices.filter((i) => i >= 0 && i < shown.n).map((i) => tileRect(shown.layout, shown.th, shown.tw, i));
    show(outline, rects.length > 0);
    show(number, rects.length > 0 && !!text);
    if (!rects.length) return;
    const x0 = Math.min(...rects.map((r) => r.x));
    const y0 = Math.min(...rects.map((r) => r.y));
    const x1 = Math.max(...rects.map((r) => r.x + r.w));
    const y1 = Math.max(...rects.map((r) => r.y + r.h));
    // the outline sits on the gaps round the tiles (the grid has a gap round its edge too), so it
    // is never clipped, and it has two colours so it shows in every colormap and theme
    Object.assign(outline.style, { left: `${x0 - 2}px`, top: `${y0 - 2}px`, width: `${x1 - x0 + 4}px`, height: `${y1 - y0 + 4}px` });
    setText(number, text);
    Object.assign(number.style, { left: `${x0}px`, top: `${y0}px` });
  }

  function clear() {
    shown = null;
    show(frame, false);
  }

  function indexAt(event) {
    if (!shown) return -1;
    const rect = canvas.getBoundingClientRect();
    const x = ((event.clientX - rect.left) / rect.width) * canvas.width;
    const y = ((event.clientY - rect.top) / rect.height) * canvas.height;
    const i = tileAt(shown.layout, shown.th, shown.tw, x, y, shown.n);
    if (i < 0) return { i };
    const r = tileRect(shown.layout, shown.th, shown.tw, i);
    const z = shown.layout.zoom;
    return { i, r, px: Math.floor((x - r.x) / z), py: Math.floor((y - r.y) / z) };
  }

  ctx.listen(canvas, "click", (event) => {
    const at = indexAt(event);
    if (at.i >= 0) opts.onPick(at.i);
  });
  ctx.listen(canvas, "pointermove", (event) => {
    const at = indexAt(event);
    if (!at.r) return hover.hide();
    hover.show(event, canvas, at.r, opts.describe(at.i, at.px, at.py));
  });
  ctx.listen(canvas, "pointerleave", () => hover.hide());
  ctx.listen(canvas, "keydown", (event) => {
    if (!shown) return;
    const cols = shown.layout.cols;
    const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -cols, ArrowDown: cols }[event.key];
    if (step === undefined) return;
    event.preventDefault();
    const from = shown.selected.length ? shown.selected[0] : 0;
    opts.onStep(from, step);
  });

  return { el: frame, canvas, draw, select, clear, get layout() { return shown && shown.layout; } };
}
