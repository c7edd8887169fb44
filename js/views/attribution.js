// Attribution panels of the side view: guided backprop of the selected channel, and Grad-CAM
// of the current layer for a chosen class, each drawn in the browser from the codes Python
// sends (`_attrib`), Grad-CAM with its own opacity and legend.
import { h, setSrc, setText, show, suppressShortcuts } from "../dom.js";
import { lutIndex, pixel } from "../colors.js";
import { unpack } from "../codec.js";
import { prepare, commit } from "../draw.js";
import { createLegend } from "../legend.js";

function percent(prob) {
  return `${(Number(prob) * 100).toFixed(1)}%`;
}

/** Guided backprop codes -> RGB pixels: mean - n std black ... mean + n std white, per channel. */
function gbpPixels(e) {
  const [, H, W] = e.shape;
  const n = H * W;
  const out = new Uint32Array(n);
  const lo = e.vmin[0];
  const step = (e.vmax[0] - lo) / 254;
  const value = (q) => {
    if (!(e.std > 0)) return 128;
    let t = 0.5 + (lo + q * step - e.mean) / (2 * e.n_std * e.std);
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    return Math.floor(t * 255 + 0.5);
  };
  for (let p = 0; p < n; p++) out[p] = pixel(value(e.codes[p]), value(e.codes[n + p]), value(e.codes[2 * n + p]));
  return { out, H, W };
}

function drawPixels(canvas, px, H, W) {
  const target = prepare(canvas, W, H, "#000000");
  target.px.set(px);
  commit(target);
}

export function createAttribution(ctx) {
  const { model, store } = ctx;
  const offline = h("div", { class: "fmw-note fmw-offline-note", hidden: true });
  const gbpButton = h("button", { type: "button", class: "fmw-btn", "aria-label": "Guided backprop" }, "Guided backprop");
  const gbpCanvas = h("canvas", { class: "fmw-side-gbp", hidden: true });
  const gbpNote = h("div", { class: "fmw-note" });
  const gbp = h(
    "figure",
    { class: "fmw-panel fmw-attrib" },
    h("div", { class: "fmw-panel-title" }, "Guided backprop"),
    h("div", { class: "fmw-picture" }, gbpCanvas),
    gbpNote,
    gbpButton,
  );

  const classSelect = suppressShortcuts(h("select", { class: "fmw-select", "aria-label": "Class" }));
  const camButton = h("button", { type: "button", class: "fmw-btn", "aria-label": "Grad-CAM" }, "Grad-CAM");
  const camInput = h("img", { class: "fmw-cam-input", alt: "input image", draggable: "false" });
  const camCanvas = h("canvas", { class: "fmw-cam", hidden: true });
  const camOpacity = suppressShortcuts(h("input", { type: "range", class: "fmw-opacity", "aria-label": "Grad-CAM opacity", min: 0, max: 100, step: 1, value: 50 }));
  const camNote = h("div", { class: "fmw-note" });
  const camLegend = createLegend(ctx, "fmw-legend fmw-panel-legend fmw-cam-legend");
  const cam = h(
    "figure",
    { class: "fmw-panel fmw-attrib" },
    h("div", { class: "fmw-panel-title" }, "Grad-CAM"),
    h("div", { class: "fmw-stack" }, camInput, camCanvas),
    h("label", { class: "fmw-control" }, h("span", { class: "fmw-label" }, "Grad-CAM opacity"), camOpacity),
    camLegend.el,
    camNote,
    h("div", { class: "fmw-row" }, h("label", { class: "fmw-control" }, h("span", { class: "fmw-label" }, "Class"), classSelect), camButton),
    offline,
  );

  const unpacked = new WeakMap();
  function entry(payload) {
    if (!payload) return null;
    if (!unpacked.has(payload)) unpacked.set(payload, unpack(payload));
    return unpacked.get(payload);
  }
  const attrib = () => model.get("_attrib") || {};
  const target = () => (classSelect.value === "" ? null : Number(classSelect.value));

  ctx.listen(gbpButton, "click", () => {
    ctx.send({ type: "guided_backprop" });
    gbpButton.disabled = true;
  });
  function requestCam() {
    ctx.send({ type: "grad_cam", target: target() });
    camButton.disabled = true;
  }
  ctx.listen(camButton, "click", requestCam);
  ctx.listen(classSelect, "change", () => {
    if (attrib().cam) requestCam();
  });
  ctx.listen(camOpacity, "input", () => {
    camCanvas.style.opacity = String(Number(camOpacity.value) / 100);
  });
  camCanvas.style.opacity = "0.5";

  function fillClasses(predictions) {
    const key = JSON.stringify(predictions.map((p) => [p.index, p.label]));
    if (classSelect.dataset.key === key) return;
    classSelect.dataset.key = key;
    const keep = classSelect.value;
    classSelect.replaceChildren();
    if (!predictions.length) classSelect.append(h("option", { value: "" }, "top class"));
    for (const p of predictions) classSelect.append(h("option", { value: String(p.index) }, `${p.label} (${percent(p.prob)})`));
    if ([...classSelect.options].some((o) => o.value === keep)) classSelect.value = keep;
  }

  function update() {
    const a = attrib();
    const layer = model.get("layer");
    const channel = model.get("channel");
    const busy = model.get("_status") === "busy";
    const reason = store.rules.offline;
    show(offline, !!reason);
    setText(offline, reason ? "Guided backprop and Grad-CAM need the Python kernel; this saved page has none." : "");
    gbpButton.disabled = busy || !!reason;
    camButton.disabled = busy || !!reason;
    classSelect.disabled = !!reason;

    const g = entry(a.gbp);
    show(gbpCanvas, !!g);
    if (g) {
      const { out, H, W } = gbpPixels(g);
      drawPixels(gbpCanvas, out, H, W);
    }
    const gbpStale = !!g && (g.layer !== layer || g.channel !== channel);
    gbpCanvas.classList.toggle("fmw-stale", gbpStale);
    setText(
      gbpNote,
      !g
        ? "What in this image makes the channel fire: its rectified response traced back to the pixels."
        : gbpStale
          ? `Shown: ${g.layer} ch ${g.channel}. Click to compute it for ${layer} ch ${channel}.`
          : `${g.layer} ch ${g.channel}`,
    );

    fillClasses((model.get("_header") || {}).predictions || []);
    setSrc(camInput, model.get("_input_png") || "");
    const c = entry(a.cam);
    show(camCanvas, !!c);
    if (c && store.rules.cam) {
      const lut = store.rules.cam.lut;
      const [, H, W] = c.shape;
      const px = new Uint32Array(H * W);
      const lo = c.vmin[0];
      const step = (c.vmax[0] - lo) / 254;
      for (let p = 0; p < px.length; p++) {
        const k = 3 * lutIndex(lo + c.codes[p] * step);
        px[p] = pixel(lut[k], lut[k + 1], lut[k + 2]);
      }
      drawPixels(camCanvas, px, H, W);
      camLegend.update({ lut, low: "0", high: "1", zero: null, caption: `evidence for “${c.label}” at ${c.layer} (1 = strongest)` });
    } else {
      camLegend.update(null);
    }
    const camStale = !!c && c.layer !== layer;
    camCanvas.classList.toggle("fmw-stale", camStale);
    setText(camNote, !c ? "Where this layer finds evidence for the chosen class." : camStale ? `Shown for ${c.layer}; click to compute it for ${layer}.` : "");
  }

  return { panels: [gbp, cam], update };
}
