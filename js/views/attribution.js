// Attribution panels of the side view: guided backprop of the selected channel, and
// Grad-CAM of the current layer for a chosen class (from the model's top predictions).
import { h, setSrc, setText, show } from "../dom.js";

function percent(prob) {
  return `${(Number(prob) * 100).toFixed(1)}%`;
}

/**
 * Build the attribution panels.
 *
 * @param {Object} ctx widget context (model, send, expect)
 * @returns {{panels: HTMLElement[], update: Function, opened: Function}}
 */
export function createAttribution(ctx) {
  const { model } = ctx;
  const gbpButton = h("button", { type: "button", class: "fmw-btn", "aria-label": "Guided backprop" }, "Guided backprop");
  const gbpImg = h("img", { class: "fmw-side-gbp", alt: "guided backpropagation of the selected channel", draggable: "false", hidden: true });
  const gbpNote = h("div", { class: "fmw-note" }, "What in the input excites this channel.");
  const gbp = h(
    "figure",
    { class: "fmw-panel fmw-attrib" },
    h("div", { class: "fmw-panel-title" }, "Guided backprop"),
    h("div", { class: "fmw-picture" }, gbpImg),
    gbpNote,
    gbpButton,
  );

  const classSelect = h("select", { class: "fmw-select", "aria-label": "Class", "data-lm-suppress-shortcuts": "true" });
  const camButton = h("button", { type: "button", class: "fmw-btn", "aria-label": "Grad-CAM" }, "Grad-CAM");
  const camInput = h("img", { class: "fmw-cam-input", alt: "input image", draggable: "false" });
  const camImg = h("img", { class: "fmw-cam", alt: "Grad-CAM heat map over the input", draggable: "false", hidden: true });
  const camNote = h("div", { class: "fmw-note" }, "Where this layer looks for the chosen class.");
  const cam = h(
    "figure",
    { class: "fmw-panel fmw-attrib" },
    h("div", { class: "fmw-panel-title" }, "Grad-CAM"),
    h("div", { class: "fmw-stack" }, camInput, camImg),
    camNote,
    h("div", { class: "fmw-row" }, h("label", { class: "fmw-control" }, h("span", { class: "fmw-label" }, "Class"), classSelect), camButton),
  );

  const attrib = () => model.get("_attrib") || {};
  const target = () => (classSelect.value === "" ? null : Number(classSelect.value));
  let asked = false;

  function requestGbp() {
    const layer = model.get("layer");
    const channel = model.get("channel");
    ctx.send({ type: "guided_backprop" });
    ctx.expect(() => {
      const g = attrib().gbp;
      return !g || g.layer !== layer || g.channel !== channel;
    });
  }

  function requestCam() {
    const layer = model.get("layer");
    const wanted = target();
    ctx.send({ type: "grad_cam", target: wanted });
    ctx.expect(() => {
      const c = attrib().cam;
      return !c || c.layer !== layer || (wanted !== null && c.target !== wanted);
    });
  }

  ctx.listen(gbpButton, "click", requestGbp);
  ctx.listen(camButton, "click", requestCam);
  ctx.listen(classSelect, "change", () => {
    if (attrib().cam) requestCam();
  });

  function fillClasses(predictions) {
    const key = JSON.stringify(predictions.map((p) => [p.index, p.label, p.prob]));
    if (classSelect.dataset.key === key) return;
    classSelect.dataset.key = key;
    const keep = classSelect.value;
    classSelect.replaceChildren();
    if (!predictions.length) {
      classSelect.append(h("option", { value: "" }, "top class"));
    }
    for (const p of predictions) {
      classSelect.append(h("option", { value: String(p.index) }, `${p.label} (${percent(p.prob)})`));
    }
    if ([...classSelect.options].some((o) => o.value === keep)) classSelect.value = keep;
  }

  function update() {
    const a = attrib();
    const layer = model.get("layer");
    const channel = model.get("channel");
    const busy = model.get("_status") === "busy";
    gbpButton.disabled = busy;
    camButton.disabled = busy;

    const g = a.gbp;
    setSrc(gbpImg, g ? g.url : "");
    show(gbpImg, !!g);
    const gbpStale = !!g && (g.layer !== layer || g.channel !== channel);
    gbpImg.classList.toggle("fmw-stale", gbpStale);
    setText(
      gbpNote,
      !g
        ? "What in the input excites this channel."
        : gbpStale
          ? `Shown: ${g.layer} ch ${g.channel}. Click to compute it for ${layer} ch ${channel}.`
          : `${g.layer} ch ${g.channel}`,
    );

    fillClasses(a.predictions || []);
    setSrc(camInput, model.get("_input_png") || "");
    const c = a.cam;
    setSrc(camImg, c ? c.url : "");
    show(camImg, !!c);
    const camStale = !!c && c.layer !== layer;
    camImg.classList.toggle("fmw-stale", camStale);
    setText(
      camNote,
      !c
        ? "Where this layer looks for the chosen class."
        : `${c.label} at ${c.layer}${camStale ? ` (click to compute it for ${layer})` : ""}`,
    );
  }

  /** The side view opened: ask for predictions once, to fill the class list. */
  function opened() {
    if (asked || (attrib().predictions || []).length) return;
    asked = true;
    ctx.send({ type: "predictions" });
  }

  ctx.on("_attrib _status _input_png", update);
  return { panels: [gbp, cam], update, opened };
}
