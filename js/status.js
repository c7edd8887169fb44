// The loading indicator and the error banner.
//
// "Loading" shows while the current selection's data is not in the cache yet (the views say so
// after each draw) or Python is computing (`_status` "busy"). Errors are Python's readable
// messages (`_error`), with a dismiss button.
import { h, setText, show } from "./dom.js";

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
  let waiting = false;

  function refresh() {
    const busy = model.get("_status") === "busy";
    const on = waiting || busy;
    root.setAttribute("data-loading", on ? "true" : "false");
    setText(loadingText, busy ? "Computing…" : "Loading…");
    show(loading, on);
  }

  function renderError() {
    const message = model.get("_error") || "";
    setText(errorText, message);
    show(error, message !== "");
  }

  ctx.listen(dismiss, "click", () => {
    show(error, false);
    ctx.send({ type: "clear_error" });
  });
  ctx.on("_status", refresh);
  ctx.on("_error", renderError);
  renderError();
  refresh();

  return {
    el: h("div", { class: "fmw-status" }, error, loading),
    setWaiting(value) {
      waiting = value;
      refresh();
    },
  };
}
