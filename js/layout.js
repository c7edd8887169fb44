// Where tiles go, as src/fmwidget/render.py grid_layout lays them out (save_png must match the
// canvas): an integer zoom (tiles of at least 48 screen pixels, at most 8x, no wider than the
// space), row-major, with gaps between and round the tiles.
const MIN_TILE_PX = 48;
const MAX_ZOOM = 8;
export const GAP = 2;

/**
 * @returns {{zoom:number, gap:number, cols:number, rows:number, width:number, height:number}}
 */
export function gridLayout(n, th, tw, avail, { cols = null, gap = GAP, minPx = MIN_TILE_PX, maxZoom = MAX_ZOOM } = {}) {
  let zoom = Math.min(maxZoom, Math.max(1, Math.ceil(minPx / Math.max(th, tw, 1))));
  if (cols === null) {
    zoom = Math.max(1, Math.min(zoom, Math.floor((avail - 2 * gap) / Math.max(tw, 1))));
    cols = Math.max(1, Math.min(n, Math.floor((avail - gap) / (tw * zoom + gap))));
  } else {
    zoom = Math.max(1, Math.min(zoom, Math.floor((avail - gap * (cols + 1)) / Math.max(cols * tw, 1))));
  }
  const rows = Math.max(1, Math.ceil(n / cols));
  return { zoom, gap, cols, rows, width: cols * (tw * zoom + gap) + gap, height: rows * (th * zoom + gap) + gap };
}

/** The rectangle of tile `i` in canvas pixels. */
export function tileRect(layout, th, tw, i) {
  const row = Math.floor(i / layout.cols);
  const col = i % layout.cols;
  const z = layout.zoom;
  return { x: layout.gap + col * (tw * z + layout.gap), y: layout.gap + row * (th * z + layout.gap), w: tw * z, h: th * z };
}

/** The tile under canvas point (x, y), or -1 (a point on a gap belongs to no tile). */
export function tileAt(layout, th, tw, x, y, n) {
  const z = layout.zoom;
  const col = Math.floor((x - layout.gap) / (tw * z + layout.gap));
  const row = Math.floor((y - layout.gap) / (th * z + layout.gap));
  if (col < 0 || row < 0 || col >= layout.cols || row >= layout.rows) return -1;
  const i = row * layout.cols + col;
  if (i >= n) return -1;
  const r = tileRect(layout, th, tw, i);
  return x >= r.x && x < r.x + r.w && y >= r.y && y < r.y + r.h ? i : -1;
}
