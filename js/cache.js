// The grids this page has received for one widget: a byte-bounded least-recently-used cache.
// A layer already seen repaints from here at once; the kernel's answer for it then only
// refreshes the entry.
import { hasItem } from "./codec.js";

/**
 * @param {number} limit bytes the entries may hold together
 */
export function createCache(limit) {
  /** @type {Map<string, Object>} insertion order = least recently used first */
  const entries = new Map();
  let size = 0;

  function drop(key) {
    const entry = entries.get(key);
    if (!entry) return;
    entries.delete(key);
    size -= entry.size;
  }

  return {
    /** Keep `entry` (it counts as just used); evict the least recently used beyond the limit. */
    put(entry) {
      drop(entry.key);
      entries.set(entry.key, entry);
      size += entry.size;
      for (const key of entries.keys()) {
        if (size <= limit || key === entry.key) break;
        drop(key);
      }
    },
    /**
     * The entry of `kind` for `layer` of capture `version` (and, for a difference, `other`)
     * that holds every item of `items` (an array of channels), or null. A hit counts as use.
     */
    find(version, kind, layer, items, other = undefined) {
      for (const [key, entry] of entries) {
        if (entry.version === version && entry.kind === kind && entry.layer === layer
            && (other === undefined || entry.other === other) && items.every((i) => hasItem(entry, i))) {
          entries.delete(key);
          entries.set(key, entry);
          return entry;
        }
      }
      return null;
    },
    get bytes() {
      return size;
    },
    get count() {
      return entries.size;
    },
    limit,
  };
}
