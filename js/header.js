// Header: model name, input size, and the current layer's name, type and shapes.
// Text formats: input size "224×224", shapes "64×55×55", no weights "—".
import { h, setText, show } from "./dom.js";
import { currentLayer, formatShape, layerIndex, layers } from "./state.js";

function field(label, cls) {
  const value = h("span", { class: `fmw-value ${cls}` });
  return { value, el: h("span", { class: "fmw-field" }, h("span", { class: "fmw-label" }, label), value) };
}

export function createHeader(ctx) {
  const { model } = ctx;
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

  const el = h(
    "div",
    { class: "fmw-header" },
    h("div", { class: "fmw-header-model" }, modelName, inputSize.el, device),
    h(
      "div",
      { class: "fmw-header-layer" },
      position,
      layerName,
      layerType,
      outShape.el,
      weightShape.el,
      calls,
    ),
    notes,
  );

  function update() {
    const header = model.get("_header") || {};
    setText(modelName, header.model || "model");
    const size = header.input_size;
    setText(inputSize.value, size && size.length ? size.join("×") : "—");
    setText(device, header.device ? `on ${header.device}` : "");
    show(device, !!header.device);
    const noteList = Array.isArray(header.notes) ? header.notes : [];
    setText(notes, noteList.join(" "));
    show(notes, noteList.length > 0);

    const info = currentLayer(model);
    const count = layers(model).length;
    setText(position, count ? `${layerIndex(model) + 1}/${count}` : "");
    setText(layerName, info ? info.name : model.get("layer") || "—");
    setText(layerType, info ? info.type : "");
    setText(outShape.value, formatShape(info && info.out_shape));
    setText(weightShape.value, formatShape(info && info.weight_shape));
    const n = info ? info.calls || 1 : 1;
    show(calls, n > 1);
    setText(calls, n > 1 ? `called ${n}× — showing first call` : "");
  }

  ctx.on("_header _layers layer", update);
  update();
  return { el, update };
}
