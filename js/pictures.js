// The grid pictures this page holds for one model, by id: the one in `_grid`, and those the
// kernel sends ahead (custom message {type: "picture", id, url, meta}) for the layer the next
// slider move most likely shows. A move to that layer is then drawn at once, from here,
// without waiting for the kernel; the kernel's answer names the picture (`_grid_meta.picture`)
// instead of sending it again.
//
// One store per model, shared by every view of it on the page (a WeakMap keyed by the model,
// so nothing is shared between widgets even where the module runs once per page).

const KEEP = 8; // the kernel counts on the last 6 (_widget.py _BROWSER_KEEPS)
const stores = new WeakMap();

function createStore() {
  /** @type {Map<string, {url: string, meta: Object, img: HTMLImageElement}>} */
  const entries = new Map();
  const listeners = new Set();

  function put(id, url, meta) {
    if (!id || !url) return;
    const had = entries.get(id);
    entries.delete(id);
    let img = had && had.url === url ? had.img : null;
    if (!img) {
      // Decoding now, off the slider's path, makes showing it later instant (same data URL).
      img = new Image();
      img.src = url;
      img.decode().catch(() => {});
    }
    entries.set(id, { url, meta: meta || {}, img });
    while (entries.size > KEEP) entries.delete(entries.keys().next().value);
    for (const fn of listeners) fn(id);
  }

  return {
    put,
    /** The entry for `id`, or null; a hit counts as recent use, as in the kernel's count. */
    get(id) {
      const entry = entries.get(id);
      if (!entry) return null;
      entries.delete(id);
      entries.set(id, entry);
      return entry;
    },
    /** The newest entry whose meta passes `test` (counted as used), or null. */
    find(test) {
      for (const [id, entry] of [...entries].reverse()) if (test(entry.meta)) return this.get(id);
      return null;
    },
    /** Call `fn(id)` on every new picture; returns the unsubscribe function. */
    subscribe(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    connected: false,
  };
}

/** The model's picture store (created on first use). */
export function pictureStore(model) {
  let store = stores.get(model);
  if (!store) {
    store = createStore();
    stores.set(model, store);
  }
  return store;
}

/**
 * Once per model and page (anywidget's `initialize`): keep the store filled from `_grid` and
 * from pictures sent ahead, and tell the kernel that this page starts with only the current
 * picture. Returns the cleanup.
 */
export function connectPictures(model) {
  const store = pictureStore(model);
  if (store.connected) return () => {};
  store.connected = true;
  const fromTraits = () => {
    const meta = model.get("_grid_meta") || {};
    const id = model.get("_grid_id");
    if (id) store.put(id, model.get("_grid"), meta.picture === id ? meta : store.get(id)?.meta);
  };
  const onCustom = (msg) => {
    if (msg && msg.type === "picture" && typeof msg.id === "string" && typeof msg.url === "string") {
      store.put(msg.id, msg.url, msg.meta);
    }
  };
  fromTraits();
  model.on("change:_grid_id", fromTraits); // `_grid` always comes with it
  model.on("msg:custom", onCustom);
  try {
    model.send({ type: "hello" });
  } catch (err) {
    // no kernel (an exported HTML page): nothing will be sent ahead
  }
  return () => {
    store.connected = false;
    model.off("change:_grid_id", fromTraits);
    model.off("msg:custom", onCustom);
  };
}
