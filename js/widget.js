// FeatureMapExplorer front end (anywidget ESM). render() wires the parts together and
// returns a cleanup that removes every model and DOM listener it added.
//
// No module-level mutable state: Jupyter runs this module once per widget, marimo once per
// page, so everything lives inside render().
import { h } from "./dom.js";
import { createControls } from "./controls.js";
import { createHeader } from "./header.js";
import { createHover } from "./hover.js";
import { createLegend } from "./legend.js";
import { connectPictures, pictureStore } from "./pictures.js";
import { displayIsStale } from "./state.js";
import { createStatus } from "./status.js";
import { createGridView } from "./views/grid.js";
import { createSideView } from "./views/side.js";

/**
 * The context every part receives: the model, listener bookkeeping and the two ways of
 * talking to Python (trait changes through `request`, custom messages through `send`).
 */
function createContext(model) {
  const disposers = [];
  let frame = 0;
  let fallback = 0;
  let unsaved = false;

  function flush() {
    cancelAnimationFrame(frame);
    clearTimeout(fallback);
    frame = 0;
    fallback = 0;
    if (unsaved) {
      unsaved = false;
      model.save_changes();
    }
  }

  const ctx = {
    model,
    /** The grid pictures this page holds (the current one and those sent ahead). */
    pictures: pictureStore(model),
    /** model.on("change:NAME") for each space-separated name, undone by cleanup. */
    on(names, fn) {
      for (const name of names.split(/\s+/).filter(Boolean)) {
        model.on(`change:${name}`, fn);
        disposers.push(() => model.off(`change:${name}`, fn));
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
    /** A custom message to Python; unsent trait changes go first so it sees them. */
    send(message) {
      flush();
      model.send(message);
    },
    /**
     * Set traits; the model changes at once and the kernel gets them at once. With `coalesce`
     * (a slider drag) the first change goes at once and later ones wait for the next animation
     * frame, where only the latest goes: about one update per frame, the latest state at the end.
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
      // The first change goes out at once (no frame of delay for a key press or a click);
      // during a drag, later ones wait for the next animation frame and only the latest goes.
      if (!coalesce || !frame) flush();
      if (coalesce && !frame) {
        // rAF pauses in hidden tabs: the timeout makes sure the last value still goes out
        frame = requestAnimationFrame(flush);
        fallback = setTimeout(flush, 100);
      }
      ctx.expect(() => displayIsStale(model, ctx.pictures));
    },
    expect() {},
    /** The grid view reports the meta of the picture it shows (for the legend). */
    shown() {},
    dispose() {
      flush();
      while (disposers.length) disposers.pop()();
    },
  };
  return ctx;
}

function render({ model, el }) {
  connectPictures(model); // normally done by initialize(); a no-op then
  const ctx = createContext(model);
  const root = h("div", { class: "fmw-root", "data-loading": "false" });
  const status = createStatus(ctx, root);
  ctx.expect = status.expect;

  const hover = createHover(ctx, root);
  const header = createHeader(ctx);
  const controls = createControls(ctx);
  let gridMeta = {};
  let built = false;
  ctx.shown = (meta) => {
    if (meta === gridMeta) return;
    gridMeta = meta;
    if (built && model.get("view") !== "side") updateView();
  };
  const grid = createGridView(ctx, hover);
  const side = createSideView(ctx, hover);
  const legend = createLegend();

  root.append(
    header.el,
    controls.el,
    status.error,
    h("div", { class: "fmw-body" }, grid.el, side.el, status.loading),
    legend.el,
    hover.el,
  );

  function updateView() {
    const view = model.get("view");
    const isSide = view === "side";
    grid.el.hidden = isSide;
    side.setVisible(isSide);
    hover.hide();
    root.dataset.view = view;
    if (isSide) {
      const map = (model.get("_side") || {}).map;
      legend.update(map && map.meta ? map.meta.legend : null, "map");
    } else {
      const meta = gridMeta;
      legend.update(meta.legend || null, view === "filters" ? "weights" : "activation");
    }
  }
  ctx.on("view _grid_meta _side", updateView);
  updateView();
  built = true;
  status.refresh();

  el.replaceChildren(root);
  return () => {
    ctx.dispose();
    root.remove();
  };
}

export default {
  initialize({ model }) {
    return connectPictures(model);
  },
  render,
};
