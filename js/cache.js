// The grids this page has received for one widget: a byte-bounded least-recently-used cache.
// A layer already seen repaints from here at once; the kernel's answer for it then only
// refreshes the entry.

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
     * The entry of `kind` for `layer` (of capture `version`) that holds items first .. last,
     * or null. A hit counts as use.
     */
    find(version, kind, layer, first, last) {
      for (const [key, entry] of entries) {
        if (entry.version === version && entry.kind === kind && entry.layer === layer
            && entry.first <= first && last < entry.first + entry.n) {
          entries.delete(key);
          entries.set(key, entry);
          return entry;
        }
      }
      return null;
    },
    /** Drop the entries of other captures (a new image). */
    keepVersion(version) {
      for (const [key, entry] of [...entries]) if (entry.version !== version) drop(key);
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
