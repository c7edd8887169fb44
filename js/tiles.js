// Geometry of a tile grid picture, from its `meta` (see docs/design.md, tiles.py):
// `cols` x `rows` tiles of `tile_w` x `tile_h` picture pixels, `pad` pixels between them, and
// whatever margin is left over split evenly around the outside.

/**
 * Where the tiles lie in the picture.
 *
 * @param {Object} meta grid metadata with width, height, rows, cols, tile_w, tile_h, pad
 * @returns {{cols:number, rows:number, tw:number, th:number, pad:number, x0:number, y0:number,
 *   width:number, height:number} | null}
 */
export function geometry(meta) {
  if (!meta || !meta.cols || !meta.rows || !meta.width || !meta.height) return null;
  const cols = meta.cols;
  const rows = meta.rows;
  const pad = meta.pad || 0;
  let tw = meta.tile_w || 0;
  let th = meta.tile_h || 0;
  const scale = meta.scale || 1;
  // tile sizes may be given in source pixels of a downscaled picture
  if (cols * tw + (cols - 1) * pad > meta.width && scale > 1) tw /= scale;
  if (rows * th + (rows - 1) * pad > meta.height && scale > 1) th /= scale;
  const x0 = Math.max(0, (meta.width - cols * tw - (cols - 1) * pad) / 2);
  const y0 = Math.max(0, (meta.height - rows * th - (rows - 1) * pad) / 2);
  return { cols, rows, tw, th, pad, x0, y0, width: meta.width, height: meta.height };
}

/**
 * Index (row-major) of the tile under a point given in picture pixels; a point on the
 * padding belongs to the nearest tile. -1 outside the grid.
 */
export function tileAt(meta, px, py) {
  const g = geometry(meta);
  if (!g || px < 0 || py < 0 || px > g.width || py > g.height) return -1;
  const col = Math.floor((px - g.x0 + g.pad / 2) / (g.tw + g.pad));
  const row = Math.floor((py - g.y0 + g.pad / 2) / (g.th + g.pad));
  if (col < 0 || row < 0 || col >= g.cols || row >= g.rows) return -1;
  return row * g.cols + col;
}

/** Rectangle {x, y, w, h} of tile `index` in picture pixels. */
export function tileRect(meta, index) {
  const g = geometry(meta);
  if (!g || index < 0) return null;
  const col = index % g.cols;
  const row = Math.floor(index / g.cols);
  return { x: g.x0 + col * (g.tw + g.pad), y: g.y0 + row * (g.th + g.pad), w: g.tw, h: g.th };
}

/** Bounding rectangle of every tile showing `channel` (a row of filters, or one map). */
export function channelRect(meta, channel) {
  const channels = (meta && meta.channels) || [];
  let box = null;
  channels.forEach((c, i) => {
    if (c !== channel) return;
    const r = tileRect(meta, i);
    if (!r) return;
    if (!box) box = { ...r };
    else {
      const right = Math.max(box.x + box.w, r.x + r.w);
      const bottom = Math.max(box.y + box.h, r.y + r.h);
      box.x = Math.min(box.x, r.x);
      box.y = Math.min(box.y, r.y);
      box.w = right - box.x;
      box.h = bottom - box.y;
    }
  });
  return box;
}

/**
 * Integer CSS magnification that makes tiles at least `minTile` screen pixels while the
 * picture stays within `maxWidth` x `maxHeight` (the stylesheet still caps it at the
 * container width). Never below 1: large pictures are shrunk only by the stylesheet.
 */
export function displayScale(meta, minTile = 48, maxWidth = 960, maxHeight = 1600) {
  const g = geometry(meta);
  if (!g) return 1;
  const tile = Math.max(1, Math.min(g.tw, g.th));
  const wanted = Math.ceil(minTile / tile);
  const fits = Math.min(Math.floor(maxWidth / g.width), Math.floor(maxHeight / g.height));
  return Math.max(1, Math.min(wanted, fits));
}

/**
 * Picture-pixel coordinates of a pointer event over an <img>, exact at any CSS size.
 */
export function pictureCoords(img, event) {
  const rect = img.getBoundingClientRect();
  if (!rect.width || !rect.height) return null;
  return {
    x: ((event.clientX - rect.left) / rect.width) * img.naturalWidth,
    y: ((event.clientY - rect.top) / rect.height) * img.naturalHeight,
  };
}
