// Controls: the layer slider with previous/next and a type-ahead layer finder, the view
// switch, the channel box (checked as Python checks it, with an inline message), and the
// normalisation / colormap / channels-per-page selects. Every name and label comes from
// `_config` (rules.js).
import { h, setText, show, suppressShortcuts } from "./dom.js";
import { channelChanges, channelCount, currentLayer, formatShape, hasFilters, layerChanges, layerIndex, layers, pageSizeChanges, viewChanges } from "./state.js";
import { createLayerFinder } from "./finder.js";

function select(label) {
  const el = suppressShortcuts(h("select", { "aria-label": label, class: "fmw-select" }));
  return { el, label: h("label", { class: "fmw-control" }, h("span", { class: "fmw-label" }, label), el) };
}

function fill(sel, options) {
  const key = JSON.stringify(options);
  if (sel.dataset.key === key) return;
  sel.dataset.key = key;
  sel.replaceChildren(...options.map(([value, text]) => h("option", { value: String(value) }, text)));
}

export function createControls(ctx) {
  const { model, store } = ctx;
  const prev = h("button", { type: "button", class: "fmw-btn", "aria-label": "Previous layer", title: "Previous layer (◀)" }, "◀");
  const next = h("button", { type: "button", class: "fmw-btn", "aria-label": "Next layer", title: "Next layer (▶)" }, "▶");
  const slider = suppressShortcuts(
    h("input", { type: "range", class: "fmw-layer-slider", "aria-label": "Layer", min: 0, max: 0, step: 1, value: 0 }),
  );
  const finder = createLayerFinder(ctx, (index) => ctx.request(layerChanges(model, index)));
  const channel = suppressShortcuts(
    h("input", { type: "number", class: "fmw-channel", "aria-label": "Channel", min: 0, step: 1, value: 0, "aria-describedby": "" }),
  );
  const channelMax = h("span", { class: "fmw-channel-max" });
  const channelError = h("span", { class: "fmw-field-error", role: "alert", hidden: true });
  const viewGroup = h("div", { class: "fmw-views", role: "group", "aria-label": "View" });
  const norm = select("Normalisation");
  const cmap = select("Colormap");
  const size = select("Channels per page");
  const sort = select("Sort by");

  const el = h(
    "div",
    { class: "fmw-controls" },
    h("div", { class: "fmw-row fmw-layer-row" }, h("span", { class: "fmw-label" }, "Layer"), prev, slider, next, finder.el),
    h(
      "div",
      { class: "fmw-row" },
      viewGroup,
      h("label", { class: "fmw-control" }, h("span", { class: "fmw-label" }, "Channel"), channel, channelMax),
      channelError,
    ),
    h("div", { class: "fmw-row" }, norm.label, cmap.label, size.label, sort.label),
  );

  // A drag fires many input events: each updates the model (the view redraws from the cache at
  // once); the first goes to the kernel at once, later ones at most once per animation frame.
  ctx.listen(slider, "input", () => ctx.request(layerChanges(model, Number(slider.value)), { coalesce: true }));
  ctx.listen(prev, "click", () => ctx.request(layerChanges(model, layerIndex(model) - 1)));
  ctx.listen(next, "click", () => ctx.request(layerChanges(model, layerIndex(model) + 1)));

  /** The channel box's value if valid, else an inline message (the value stays as typed). */
  function checkChannel() {
    const count = channelCount(currentLayer(model));
    const text = channel.value.trim();
    const value = Number(text);
    let problem = "";
    if (text === "" || !Number.isInteger(value)) problem = `Channel must be a whole number from 0 to ${count - 1}.`;
    else if (value < 0 || value >= count) problem = `Channel ${value} is out of range: this layer has ${count} channels, so use 0 to ${count - 1}.`;
    setText(channelError, problem);
    show(channelError, !!problem);
    channel.setAttribute("aria-invalid", problem ? "true" : "false");
    return problem ? null : value;
  }
  function commitChannel() {
    const value = checkChannel();
    if (value !== null) ctx.request(channelChanges(model, value));
  }
  ctx.listen(channel, "input", checkChannel);
  ctx.listen(channel, "change", commitChannel);
  ctx.listen(channel, "keydown", (event) => {
    if (event.key === "Enter") commitChannel();
  });
  ctx.listen(norm.el, "change", () => ctx.request({ norm: norm.el.value }));
  ctx.listen(cmap.el, "change", () => ctx.request({ cmap: cmap.el.value }));
  ctx.listen(size.el, "change", () => ctx.request(pageSizeChanges(model, Number(size.el.value))));
  // a new order shows the selected channel's page once Python's ranking arrives
  ctx.listen(sort.el, "change", () => ctx.request({ sort: sort.el.value }));

  let viewButtons = [];
  function buildViews() {
    const key = JSON.stringify(store.rules.views);
    if (viewGroup.dataset.key === key) return;
    viewGroup.dataset.key = key;
    viewButtons = store.rules.views.map(({ name, label }) => {
      const b = h("button", { type: "button", class: "fmw-btn fmw-view-btn", "data-view": name, "aria-pressed": "false" }, label);
      ctx.listen(b, "click", () => ctx.request(viewChanges(model, name)));
      return b;
    });
    viewGroup.replaceChildren(...viewButtons);
  }

  function update() {
    const rules = store.rules;
    buildViews();
    fill(norm.el, rules.norms.map((n) => [n.name, n.label]));
    fill(cmap.el, [...rules.cmaps].map(([name, c]) => [name, c.label]));
    fill(size.el, rules.pageSizes.map((s) => [s, String(s)]));
    fill(sort.el, rules.rankings.map((r) => [r.name, r.label]));

    const all = layers(model);
    const index = layerIndex(model);
    const info = currentLayer(model);
    slider.max = String(Math.max(0, all.length - 1));
    slider.value = String(Math.max(0, index));
    slider.setAttribute("aria-valuetext", info ? `${info.name} (${info.type}, ${formatShape(info.out_shape)})` : "");
    slider.disabled = all.length === 0;
    prev.disabled = index <= 0;
    next.disabled = index < 0 || index >= all.length - 1;
    finder.update();

    const count = channelCount(info);
    channel.max = String(Math.max(0, count - 1));
    if (document.activeElement !== channel) {
      channel.value = String(model.get("channel"));
      show(channelError, false);
      channel.setAttribute("aria-invalid", "false");
    }
    setText(channelMax, count ? `of 0–${count - 1}` : "");

    const view = model.get("view");
    for (const button of viewButtons) {
      const active = button.dataset.view === view;
      button.setAttribute("aria-pressed", String(active));
      button.classList.toggle("fmw-active", active);
      if (button.dataset.view === "filters") {
        button.disabled = !hasFilters(info) && view !== "filters";
        button.title = hasFilters(info) ? "Learned filters (weights)" : "This layer has no conv weight to show";
      }
    }
    norm.el.value = model.get("norm");
    cmap.el.value = model.get("cmap");
    size.el.value = String(model.get("page_size"));
    size.label.hidden = view === "side";
    sort.el.value = model.get("sort");
    sort.label.hidden = view !== "maps" || !!rules.offline;
  }

  ctx.on("_layers _config layer channel view norm cmap page_size sort", update);
  update();
  return { el, update };
}
