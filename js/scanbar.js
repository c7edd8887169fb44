// The progress of `w.scan(...)`: images done, images per second and a Stop button while it runs;
// a summary once it is done.
//
// Stop interrupts the kernel, as the notebook's own stop button does: the scan runs in the cell,
// so the kernel reads no widget message until it ends (jupyter-ui-poll, which used to read them
// meanwhile, does nothing under ipykernel 7). The scan takes the KeyboardInterrupt as a clean
// stop and keeps what it scanned. A front end whose widget manager has no kernel handle
// (outside JupyterLab and Notebook 7) gets the message instead, read between batches where the
// kernel can.
import { h, setText, show } from "./dom.js";

export function createScanBar(ctx) {
  const { model } = ctx;
  const bar = h("progress", { class: "fmw-scan-progress", max: 1, value: 0 });
  const text = h("span", { class: "fmw-scan-text" });
  const stop = h("button", { type: "button", class: "fmw-btn", "aria-label": "Stop scan" }, "Stop");
  const el = h("div", { class: "fmw-scan", role: "status", "aria-live": "polite", hidden: true }, h("span", { class: "fmw-label" }, "Scan"), bar, text, stop);

  ctx.listen(stop, "click", () => {
    if (!(model.get("_scan") || {}).running) return;
    stop.disabled = true;
    setText(text, `${text.textContent} · stopping…`);
    const kernel = model.widget_manager && model.widget_manager.kernel;
    if (kernel && typeof kernel.interrupt === "function") kernel.interrupt().catch(() => ctx.send({ type: "stop_scan" }));
    else ctx.send({ type: "stop_scan" });
  });

  function update() {
    const s = model.get("_scan") || {};
    show(el, s.done !== undefined);
    if (s.done === undefined) return;
    show(stop, !!s.running);
    stop.disabled = !s.running;
    if (s.total) {
      bar.max = s.total;
      bar.value = s.done;
    } else {
      bar.removeAttribute("value"); // indeterminate: the source has no length
    }
    show(bar, !!s.running);
    const rate = s.rate ? ` · ${s.rate.toFixed(1)} images/s` : "";
    if (s.running) setText(text, `${s.done}${s.total ? ` of ${s.total}` : ""} images${rate}`);
    else if (s.failed) setText(text, `Scan failed after ${s.done} images: ${s.failed}`);
    else setText(text, `${s.done} images scanned${s.stopped ? ` (stopped: ${s.reason === "KeyboardInterrupt" ? "interrupted" : "Stop"})` : ""} in ${(s.elapsed || 0).toFixed(1)} s · the side view shows what fires each channel`);
  }

  ctx.on("_scan", update);
  update();
  return { el };
}
