// Re-lay a one-row strip of tiles on a near-square grid, in the browser. The side view's
// filter comes as one row (a tile per input channel); 64 kernels of 3x3 in a row would be a
// 3-pixel-high strip, while 8 x 8 of them enlarge to a readable square.
import { geometry, tileRect } from "../tiles.js";

/**
 * @param {string} url data URL of the strip picture
 * @param {Object} meta its grid metadata (rows must be 1)
 * @returns {Promise<{url: string, meta: Object}>} the re-laid picture and metadata, where
 *   `tile_in_channels` gives the input channel of every tile; the strip itself when there is
 *   nothing to gain or the picture cannot be read
 */
export function reflowStrip(url, meta) {
  const n = meta ? meta.cols : 0;
  const g = geometry(meta);
  if (!g || meta.rows !== 1 || n <= 3) return Promise.resolve({ url, meta });
  const cols = Math.ceil(Math.sqrt(n));
  const rows = Math.ceil(n / cols);
  return new Promise((resolve) => {
    const img = new Image();
    img.onerror = () => resolve({ url, meta });
    img.onload = () => {
      const canvas = document.createElement("canvas");
      canvas.width = cols * g.tw + (cols - 1) * g.pad;
      canvas.height = rows * g.th + (rows - 1) * g.pad;
      const c = canvas.getContext("2d");
      if (!c) return resolve({ url, meta });
      c.imageSmoothingEnabled = false;
      for (let i = 0; i < n; i++) {
        const src = tileRect(meta, i);
        const x = (i % cols) * (g.tw + g.pad);
        const y = Math.floor(i / cols) * (g.th + g.pad);
        c.drawImage(img, src.x, src.y, src.w, src.h, x, y, g.tw, g.th);
      }
      const cells = rows * cols;
      const pick = (values, fill) => Array.from({ length: cells }, (_, i) => (i < n && values ? values[i] : fill));
      resolve({
        url: canvas.toDataURL("image/png"),
        meta: {
          ...meta,
          width: canvas.width,
          height: canvas.height,
          rows,
          cols,
          channels: pick(meta.channels, -1),
          ranges: pick(meta.ranges, null),
          tile_in_channels: pick(meta.in_channels, null),
        },
      });
    };
    img.src = url;
  });
}
