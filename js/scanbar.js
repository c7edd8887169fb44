// The progress of `w.scan(...)`: images done, images per second and a Stop button while it runs
// (Python reads the Stop message between batches); a summary once it is done.
import { h, setText, show } from "./dom.js";

export function createScanBar(ctx) {
  const { model } = ctx;
  const bar = h("progress", { class: "fmw-scan-progress", max: 1, value: 0 });
  const text = h("span", { class: "fmw-scan-text" });
  const stop = h("button", { type: "button", class: "fmw-btn", "aria-label": "Stop scan" }, "Stop");
  const el = h("div", { class: "fmw-scan", role: "status", "aria-live": "polite", hidden: true }, h("span", { class: "fmw-label" }, "Scan"), bar, text, stop);

  ctx.listen(stop, "click", () => {
    stop.disabled = true;
    setText(text, `${text.textContent} · stopping…`);
    ctx.send({ type: "stop_scan" });
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
    else setText(text, `${s.done} images scanned${s.stopped ? ` (stopped: ${s.reason === "KeyboardInterrupt" ? "interrupted" : "Stop"})` : ""} in ${(s.elapsed || 0).toFixed(1)} s · the side view shows what fires each channel`);
  }

  ctx.on("_scan", update);
  update();
  return { el };
}
