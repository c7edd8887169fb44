// One filter enlarged: a first layer's colour composite beside its three per-input kernels, or
// a deeper filter's kernels (those of the input page shown) on a near-square grid. Used by the
// filters view (the selected filter) and the side-by-side view.
import { h, setText, show } from "../dom.js";
import { colourTables, compositePixels, decodeValue } from "../colors.js";
import { itemCodes } from "../codec.js";
import { gridLayout, tileAt, tileRect } from "../layout.js";
import { clearTail, commit, prepare, putTile } from "../draw.js";
import { formatNumber } from "../state.js";

const INPUT_NAMES = ["R", "G", "B"];

export function createKernels(ctx, hover, { title = true } = {}) {
  const { store } = ctx;
  const heading = h("div", { class: "fmw-panel-title" });
  const canvas = h("canvas", { class: "fmw-kernels" });
  const note = h("div", { class: "fmw-note" });
  const el = h("div", { class: "fmw-kernels-panel", hidden: true }, title ? heading : null, canvas, note);
  let shown = null;

  function draw(entry, f, { norm, cmap, ins = null, avail = 360 }) {
    const [, I, kh, kw] = entry.shape;
    const colormap = store.rules.cmaps.get(cmap);
    const codes = itemCodes(entry, f);
    const table = colourTables(entry, norm, colormap.lut, store.rules.nanColor)(f);
    const tiles = [];
    const names = [];
    if (!entry.depthwise && I === 3) {
      tiles.push([compositePixels(codes, entry.vmin[f], entry.vmax[f], entry.bgr, store.rules.nanColor), null]);
      names.push("RGB");
      for (let k = 0; k < 3; k++) {
        tiles.push([codes.subarray(k * kh * kw, (k + 1) * kh * kw), table]);
        // input k is R, G, B (or B, G, R for a Caffe-style model)
        names.push(`in ${k} (${INPUT_NAMES[entry.bgr ? 2 - k : k]})`);
      }
    } else {
      const inputs = ins || Array.from({ length: entry.depthwise ? 1 : I }, (_, k) => k);
      for (const k of inputs) {
        tiles.push([codes.subarray(k * kh * kw, (k + 1) * kh * kw), table]);
        names.push(entry.depthwise ? `channel ${f}` : `in ${k}`);
      }
    }
    const cols = Math.ceil(Math.sqrt(tiles.length));
    const layout = gridLayout(tiles.length, kh, kw, avail, { cols: tiles.length === 4 ? 4 : cols, minPx: 72, maxZoom: 24 });
    const target = prepare(canvas, layout.width, layout.height, colormap.gap);
    tiles.forEach(([c, t], i) => putTile(target, layout, kh, kw, i, c, t));
    clearTail(target, layout, kh, kw, tiles.length);
    commit(target);
    shown = { entry, f, layout, kh, kw, names, tiles, codes, ins };
    setText(heading, `Filter ${f}`);
    const what = entry.depthwise ? "depthwise: one kernel" : I === 3 ? "colour composite and its 3 input kernels" : `${tiles.length} of its ${I} input kernels`;
    setText(note, `${kh}×${kw}, ${what}; range ${formatNumber(entry.vmin[f])} … ${formatNumber(entry.vmax[f])}`);
    show(el, true);
  }

  ctx.listen(canvas, "pointermove", (event) => {
    if (!shown) return;
    const rect = canvas.getBoundingClientRect();
    const x = ((event.clientX - rect.left) / rect.width) * canvas.width;
    const y = ((event.clientY - rect.top) / rect.height) * canvas.height;
    const i = tileAt(shown.layout, shown.kh, shown.kw, x, y, shown.tiles.length);
    if (i < 0) return hover.hide();
    const r = tileRect(shown.layout, shown.kh, shown.kw, i);
    const px = Math.floor((x - r.x) / shown.layout.zoom);
    const py = Math.floor((y - r.y) / shown.layout.zoom);
    const [codes, table] = shown.tiles[i];
    const text = table ? `${shown.names[i]}\nweight ${formatNumber(decodeValue(shown.entry, shown.f, codes[py * shown.kw + px]))}` : shown.names[i];
    hover.show(event, canvas, r, `filter ${shown.f}, ${text}`);
  });
  ctx.listen(canvas, "pointerleave", () => hover.hide());

  return {
    el,
    draw,
    clear() {
      shown = null;
      show(el, false);
    },
  };
}
