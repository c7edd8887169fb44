// Loading indicator and error banner.
//
// Loading shows while `_status` is "loading"/"busy", and after a user action until the
// matching answer from Python is on screen (each action passes a `waiting()` test), or an
// error arrives, or a generous fallback timeout passes (so a lost answer never leaves the
// widget looking busy forever).
import { h, setText, show } from "./dom.js";

const FALLBACK_MS = 30000;

export function createStatus(ctx, root) {
  const { model } = ctx;
  const loadingText = h("span", { class: "fmw-loading-text" }, "Loading…");
  const loading = h(
    "div",
    { class: "fmw-loading", role: "status", "aria-live": "polite", hidden: true },
    h("span", { class: "fmw-spinner", "aria-hidden": "true" }),
    loadingText,
  );
  const errorText = h("span", { class: "fmw-error-text" });
  const dismiss = h("button", { type: "button", class: "fmw-error-dismiss", "aria-label": "Dismiss error", title: "Dismiss" }, "×");
  const error = h("div", { class: "fmw-error", role: "alert", hidden: true }, errorText, dismiss);

  /** @type {Set<{waiting: () => boolean, timer: number}>} */
  const pending = new Set();

  function drop(entry) {
    clearTimeout(entry.timer);
    pending.delete(entry);
  }

  function refresh() {
    for (const entry of [...pending]) if (!entry.waiting()) drop(entry);
    const status = model.get("_status");
    const on = status === "loading" || status === "busy" || pending.size > 0;
    root.setAttribute("data-loading", on ? "true" : "false");
    setText(loadingText, status === "busy" ? "Computing…" : "Loading…");
    show(loading, on);
  }

  /** Show loading until `waiting()` is false (checked whenever Python sends something). */
  function expect(waiting) {
    if (!waiting()) return refresh();
    const entry = { waiting, timer: 0 };
    entry.timer = setTimeout(() => {
      pending.delete(entry);
      refresh();
    }, FALLBACK_MS);
    pending.add(entry);
    refresh();
  }

  function renderError() {
    const message = model.get("_error") || "";
    setText(errorText, message);
    show(error, message !== "");
    if (message) {
      // a refused request will not be answered: stop waiting for it
      for (const entry of [...pending]) drop(entry);
    }
    refresh();
  }

  ctx.listen(dismiss, "click", () => {
    show(error, false);
    ctx.send({ type: "clear_error" });
  });
  ctx.on("_grid _grid_id _grid_meta _side _attrib _status _layers layer channel view page", refresh);
  ctx.cleanup(ctx.pictures.subscribe(refresh));
  ctx.on("_error", renderError);
  ctx.cleanup(() => {
    for (const entry of [...pending]) drop(entry);
  });
  renderError();

  return { loading, error, expect, refresh };
}
