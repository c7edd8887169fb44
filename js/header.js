// Header: model name, input size, device, the current layer (name, type, shapes), notes (one
// plain sentence each, details on demand) and the model's top-5 predictions.
import { h, setText, show } from "./dom.js";
import { currentLayer, formatShape, layerIndex, layers } from "./state.js";

function field(label, cls) {
  const value = h("span", { class: `fmw-value ${cls}` });
  return { value, el: h("span", { class: "fmw-field" }, h("span", { class: "fmw-label" }, label), value) };
}

export function createHeader(ctx) {
  const { model, store } = ctx;
  const modelName = h("span", { class: "fmw-model" });
  const inputSize = field("input", "fmw-input-size");
  const device = h("span", { class: "fmw-device" });
  const position = h("span", { class: "fmw-layer-position" });
  const layerName = h("span", { class: "fmw-layer-name" });
  const layerType = h("span", { class: "fmw-layer-type" });
  const outShape = field("output", "fmw-out-shape");
  const weightShape = field("weight", "fmw-weight-shape");
  const calls = h("span", { class: "fmw-calls", hidden: true });
  const notes = h("div", { class: "fmw-notes", hidden: true });
  const predictions = h("ol", { class: "fmw-predictions", "aria-label": "Top predictions" });
  const predictionsNote = h("div", { class: "fmw-note fmw-predictions-note", hidden: true });
  const predictionsBox = h("div", { class: "fmw-predictions-box" }, h("span", { class: "fmw-label" }, "Top 5"), predictions, predictionsNote);

  const el = h(
    "div",
    { class: "fmw-header" },
    h(
      "div",
      { class: "fmw-header-main" },
      h(
        "div",
        { class: "fmw-header-text" },
        h("div", { class: "fmw-header-model" }, modelName, inputSize.el, device),
        h("div", { class: "fmw-header-layer" }, position, layerName, layerType, outShape.el, weightShape.el, calls),
      ),
      predictionsBox,
    ),
    notes,
  );

  function renderNotes(list) {
    const key = JSON.stringify(list);
    if (notes.dataset.key === key) return;
    notes.dataset.key = key;
    notes.replaceChildren(
      ...list.map((note) => {
        const text = typeof note === "string" ? note : note.text;
        const details = typeof note === "string" ? "" : note.details;
        if (!details) return h("div", { class: "fmw-note-line" }, text);
        return h("details", { class: "fmw-note-line" }, h("summary", {}, text), h("div", { class: "fmw-note-details" }, details));
      }),
    );
  }

  function update() {
    const header = model.get("_header") || {};
    setText(modelName, header.model || "model");
    const size = header.input_size;
    setText(inputSize.value, size && size.length ? size.join("×") : "—");
    setText(device, header.device ? `on ${header.device}` : "");
    show(device, !!header.device);
    const list = [...(Array.isArray(header.notes) ? header.notes : [])];
    if (store.rules.offline) list.unshift({ text: store.rules.offline, details: store.rules.exportNote || "" });
    else if (store.rules.exportNote) list.unshift(store.rules.exportNote);
    renderNotes(list);
    show(notes, list.length > 0);

    const preds = header.predictions || [];
    predictions.replaceChildren(
      ...preds.map((p) =>
        h(
          "li",
          { class: "fmw-prediction" },
          h("span", { class: "fmw-prediction-label" }, p.label),
          h("span", { class: "fmw-prediction-bar", style: `--p:${Math.max(0, Math.min(1, p.prob))}` }),
          h("span", { class: "fmw-prediction-prob" }, `${(p.prob * 100).toFixed(1)}%`),
        ),
      ),
    );
    setText(predictionsNote, header.predictions_note || "");
    show(predictionsNote, !!header.predictions_note);
    show(predictionsBox, preds.length > 0 || !!header.predictions_note);

    const info = currentLayer(model);
    const count = layers(model).length;
    setText(position, count ? `${layerIndex(model) + 1}/${count}` : "");
    setText(layerName, info ? info.name : model.get("layer") || "—");
    setText(layerType, info ? info.type : "");
    setText(outShape.value, formatShape(info && info.out_shape));
    setText(weightShape.value, formatShape(info && info.weight_shape));
    const n = info ? info.calls || 1 : 1;
    show(calls, n > 1);
    setText(calls, n > 1 ? `called ${n}× — showing the first call` : "");
  }

  ctx.on("_header _layers layer", update);
  update();
  return { el, update };
}
