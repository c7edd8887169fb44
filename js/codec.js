// The wire format of the data traits, browser end (src/fmwidget/codec.py is the other end):
// a payload's arrays are base64 strings of raw little-endian bytes, uint8 codes and float32
// ranges. Item i's code q stands for vmin[i] + q * (vmax[i] - vmin[i]) / 254; 255 is NaN.

/** Bytes of a base64 string. */
export function bytes(text) {
  const binary = atob(text || "");
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** Float32 values of a base64 string (little-endian, as Python packs them). */
export function floats(text) {
  const raw = bytes(text);
  const view = new DataView(raw.buffer);
  const out = new Float32Array(raw.length >> 2);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
  return out;
}

/**
 * A payload with its arrays decoded, ready for the cache and the views:
 * {kind, layer, version, first, count, shape, codes: Uint8Array, vmin, vmax: Float32Array,
 *  n (items carried), size (bytes held), key, ...kind-specific fields}.
 * Returns null for an empty or malformed payload.
 */
export function unpack(payload, format) {
  if (!payload || typeof payload !== "object" || !payload.kind || !Array.isArray(payload.shape)) return null;
  if (format !== undefined && payload.format !== format) return null;
  const codes = bytes(payload.codes);
  const expected = payload.shape.reduce((a, b) => a * b, 1);
  if (codes.length !== expected) return null;
  const vmin = floats(payload.vmin);
  const vmax = floats(payload.vmax);
  const n = payload.shape[0];
  // Items first .. first + n - 1, or, when the payload lists them, those items in that order.
  const items = Array.isArray(payload.items) ? payload.items : null;
  const rowOf = items ? new Map(items.map((c, k) => [c, k])) : null;
  return {
    ...payload,
    codes,
    vmin,
    vmax,
    n,
    rowOf,
    size: codes.length + 8 * vmin.length,
    key: `${payload.version}|${payload.other ?? ""}|${payload.kind}|${payload.layer}|${items ? items.join(",") : `${payload.first}+${n}`}`,
  };
}

/** Whether an entry carries item `i`. */
export function hasItem(entry, i) {
  return entry.rowOf ? entry.rowOf.has(i) : i >= entry.first && i < entry.first + entry.n;
}

/** The codes of item `i` (an absolute index) of an entry, as a subarray (no copy). */
export function itemCodes(entry, i) {
  const per = entry.codes.length / entry.n;
  const k = entry.rowOf ? entry.rowOf.get(i) : i - entry.first;
  return entry.codes.subarray(k * per, (k + 1) * per);
}
