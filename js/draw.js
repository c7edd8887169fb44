// Drawing codes on a canvas: tiles through per-item colour tables, enlarged by an integer zoom
// with no smoothing, gaps in the colormap's gap colour. One putImageData per picture.
import { pixel } from "./colors.js";
import { hexRGB } from "./rules.js";
import { tileRect } from "./layout.js";

/** Size the canvas (backing pixels = CSS pixels: exact, as save_png) and clear it to `fill`. */
export function prepare(canvas, width, height, fill) {
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  const px = new Uint32Array(image.data.buffer);
  px.fill(pixel(...hexRGB(fill)));
  return { ctx, image, px };
}

/** Write one tile: `codes` (th * tw) through `table` (Uint32Array(256)) or, without a table,
 * `codes` are already pixels (Uint32Array). */
export function putTile(target, layout, th, tw, i, codes, table) {
  const { px, image } = target;
  const width = image.width;
  const r = tileRect(layout, th, tw, i);
  const z = layout.zoom;
  if (z === 1) { // the common case, without the inner enlargement loops
    for (let y = 0; y < th; y++) {
      const row = y * tw;
      let o = (r.y + y) * width + r.x;
      if (table) for (let x = 0; x < tw; x++) px[o++] = table[codes[row + x]];
      else px.set(codes.subarray(row, row + tw), o);
    }
    return;
  }
  for (let y = 0; y < th; y++) {
    const row = y * tw;
    for (let dy = 0; dy < z; dy++) {
      let o = (r.y + y * z + dy) * width + r.x;
      for (let x = 0; x < tw; x++) {
        const c = table ? table[codes[row + x]] : codes[row + x];
        for (let dx = 0; dx < z; dx++) px[o++] = c;
      }
    }
  }
}

/** Make the cells after the last of `n` tiles transparent (the page shows through). */
export function clearTail(target, layout, th, tw, n) {
  const { px, image } = target;
  const cells = layout.rows * layout.cols;
  if (n >= cells) return;
  const first = tileRect(layout, th, tw, n);
  const width = image.width;
  // the rest of the last row, from the gap before the first empty cell to the right edge
  for (let y = first.y - layout.gap; y < image.height; y++) px.fill(0, y * width + first.x - layout.gap, (y + 1) * width);
}

/** Finish: put the pixels on the canvas. */
export function commit(target) {
  target.ctx.putImageData(target.image, 0, 0);
}

/** One plane (h x w codes) enlarged by `zoom` on its own canvas. */
export function drawPlane(canvas, codes, h, w, zoom, table) {
  const layout = { zoom, gap: 0, cols: 1, rows: 1 };
  const target = prepare(canvas, w * zoom, h * zoom, "#000000");
  putTile(target, layout, h, w, 0, codes, table);
  commit(target);
}
