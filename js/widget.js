// FeatureMapExplorer front end (anywidget ESM). `initialize` owns the model's data (rules and
// a bounded cache of the grids received, store.js); `render` builds one view of it and returns
// a cleanup that removes every listener it added. The selection traits are the request: a
// control sets them, the views redraw at once from the cache, and Python answers with the
// data the cache lacks.
import { h } from "./dom.js";
import { createControls } from "./controls.js";
import { createHeader } from "./header.js";
import { createHover } from "./hover.js";
import { createImages } from "./images.js";
import { createScanBar } from "./scanbar.js";
import { createLegend } from "./legend.js";
import { createStatus } from "./status.js";
import { storeFor } from "./store.js";
import { createMapsView } from "./views/maps.js";
import { createFiltersView } from "./views/filters.js";
import { createSideView } from "./views/side.js";

/**
 * The context every part receives: the model, the store, listener bookkeeping and the two
 * ways of talking to Python (trait changes through `request`, messages through `send`).
 */
function createContext(model, store) {
  const disposers = [];
  let frame = 0;
  let fallback = 0;
  let unsaved = false;
  // Redraws wait for the next animation frame, where every part updates once: a request goes
  // to the kernel before any drawing, and a burst of changes draws once.
  const due = new Set();
  let drawFrame = 0;
  let drawFallback = 0;
  function draw() {
    cancelAnimationFrame(drawFrame);
    clearTimeout(drawFallback);
    drawFrame = 0;
    const fns = [...due];
    due.clear();
    for (const fn of fns) fn();
  }

  function flush() {
    cancelAnimationFrame(frame);
    clearTimeout(fallback);
    frame = 0;
    fallback = 0;
    if (!unsaved) return;
    unsaved = false;
    if (store.rules.offline) return; // a saved page: no kernel to tell
    model.save_changes();
  }

  const ctx = {
    model,
    store,
    /** Run `fn` at the next animation frame (once, however often it is asked for). */
    schedule(fn) {
      due.add(fn);
      if (!drawFrame) {
        drawFrame = requestAnimationFrame(draw);
        drawFallback = setTimeout(draw, 100); // rAF pauses in hidden tabs
      }
    },
    /** On a change of any space-separated trait NAME, `fn` runs at the next frame; undone by cleanup. */
    on(names, fn) {
      const later = () => ctx.schedule(fn);
      for (const name of names.split(/\s+/).filter(Boolean)) {
        model.on(`change:${name}`, later);
        disposers.push(() => model.off(`change:${name}`, later));
      }
    },
    /** addEventListener, undone by cleanup. */
    listen(target, type, fn, options) {
      target.addEventListener(type, fn, options);
      disposers.push(() => target.removeEventListener(type, fn, options));
    },
    cleanup(fn) {
      disposers.push(fn);
    },
    /** A message to Python (with binary `buffers`, e.g. a file's bytes); unsent trait changes go first. */
    send(message, buffers) {
      flush();
      if (!store.rules.offline) model.send(message, undefined, buffers);
    },
    /**
     * Set selection traits: the views redraw at once (from the cache), and the kernel gets the
     * change at once. With `coalesce` (a slider drag) later changes wait for the next animation
     * frame, where only the latest goes: about one request per frame, the latest at the end.
     */
    request(changes, { coalesce = false } = {}) {
      let changed = false;
      for (const [key, value] of Object.entries(changes)) {
        if (model.get(key) !== value) {
          model.set(key, value);
          changed = true;
        }
      }
      if (!changed) return;
      unsaved = true;
      if (!coalesce || !frame) flush();
      if (coalesce && !frame) {
        // rAF pauses in hidden tabs: the timeout makes sure the last value still goes out
        frame = requestAnimationFrame(flush);
        fallback = setTimeout(flush, 100);
      }
    },
    dispose() {
      flush();
      cancelAnimationFrame(drawFrame);
      clearTimeout(drawFallback);
      due.clear();
      while (disposers.length) disposers.pop()();
    },
  };
  return ctx;
}

function render({ model, el }) {
  const store = storeFor(model); // normally made by initialize() already
  const ctx = createContext(model, store);
  const root = h("div", { class: "fmw-root", "data-loading": "false" });
  // For the browser tests (docs/design.md): the decoded cache, to compare with Python's codes.
  Object.defineProperty(root, "fmwStore", { value: store, configurable: true });
  const hover = createHover(ctx, root);
  const legend = createLegend(ctx);
  const status = createStatus(ctx, root);
  const header = createHeader(ctx);
  const images = createImages(ctx, root);
  const scanBar = createScanBar(ctx);
  const controls = createControls(ctx);
  const views = {
    maps: createMapsView(ctx, hover, legend),
    filters: createFiltersView(ctx, hover, legend),
    side: createSideView(ctx, hover, legend),
  };
  const body = h("div", { class: "fmw-body" }, ...Object.values(views).map((v) => v.el));
  root.append(header.el, images.el, scanBar.el, controls.el, status.el, body, legend.el, hover.el);

  /** Draw the current view from the cache; say "loading" while its data is on the way. */
  function update() {
    const view = model.get("view");
    root.dataset.view = view;
    hover.hide();
    let ready = true;
    for (const [name, v] of Object.entries(views)) {
      v.el.hidden = name !== view;
      if (name === view) ready = v.draw() !== false;
    }
    status.setWaiting(!ready);
    root.dataset.cacheBytes = String(store.cache.bytes);
  }

  ctx.on("layer channel view norm cmap page page_size in_page image_index compare sort _layers _images _versions _header _ranking _attrib _input_png _top _status", update);
  // New data is drawn as it arrives (it is what the selection waits for), not a frame later:
  // once per message (a side-view answer sets _map and _filters together), in a microtask.
  let arrived = false;
  let alive = true;
  ctx.cleanup(() => { alive = false; });
  ctx.cleanup(store.subscribe(() => {
    if (arrived) return;
    arrived = true;
    queueMicrotask(() => {
      arrived = false;
      if (alive) update();
    });
  }));
  // Redraw when the widget's width changes (grids use the width they have).
  let width = 0;
  const resize = new ResizeObserver(() => {
    if (Math.abs(root.clientWidth - width) < 4) return;
    width = root.clientWidth;
    ctx.schedule(update);
  });
  resize.observe(root);
  ctx.cleanup(() => resize.disconnect());

  el.replaceChildren(root);
  update();
  return () => {
    ctx.dispose();
    root.remove();
  };
}

export default {
  initialize({ model }) {
    const store = storeFor(model);
    return () => store.dispose();
  },
  render,
};
