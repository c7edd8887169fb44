// The type-ahead layer finder: type part of a name, type or shape; the matches list below
// (name, type, output shape); arrow keys move, Enter picks, Escape closes. An ARIA combobox.
import { h, setText, show, suppressShortcuts } from "./dom.js";
import { formatShape, layers } from "./state.js";

const MAX_SHOWN = 12;

export function createLayerFinder(ctx, onPick) {
  const { model } = ctx;
  const listId = `fmw-layers-${Math.random().toString(36).slice(2, 9)}`;
  const input = suppressShortcuts(
    h("input", {
      type: "search", class: "fmw-finder", "aria-label": "Find layer", placeholder: "Find layer…", role: "combobox",
      "aria-autocomplete": "list", "aria-expanded": "false", "aria-controls": listId, autocomplete: "off", spellcheck: "false",
    }),
  );
  const list = h("ul", { class: "fmw-finder-list", role: "listbox", id: listId, hidden: true });
  const count = h("span", { class: "fmw-finder-count" });
  const el = h("div", { class: "fmw-finder-box" }, input, list, count);
  let matches = [];
  let active = 0;

  function search() {
    const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    matches = [];
    layers(model).forEach((info, index) => {
      const text = `${info.name} ${info.type} ${formatShape(info.out_shape)}`.toLowerCase();
      if (words.every((w) => text.includes(w))) matches.push(index);
    });
    active = 0;
    render();
  }

  function render() {
    const all = layers(model);
    const open = input.value.trim() !== "" && document.activeElement === input;
    show(list, open);
    input.setAttribute("aria-expanded", String(open));
    setText(count, input.value.trim() ? `${matches.length} match${matches.length === 1 ? "" : "es"}` : "");
    if (!open) return;
    list.replaceChildren(
      ...matches.slice(0, MAX_SHOWN).map((index, k) => {
        const info = all[index];
        const item = h(
          "li",
          { role: "option", id: `${listId}-${k}`, class: "fmw-finder-item", "aria-selected": String(k === active), "data-index": index },
          h("span", { class: "fmw-finder-name" }, info.name),
          h("span", { class: "fmw-finder-type" }, info.type),
          h("span", { class: "fmw-finder-shape" }, formatShape(info.out_shape)),
        );
        item.addEventListener("mousedown", (event) => {
          event.preventDefault(); // keep the focus in the box until picked
          pick(index);
        });
        return item;
      }),
    );
    if (matches.length > MAX_SHOWN) list.append(h("li", { class: "fmw-finder-more" }, `… ${matches.length - MAX_SHOWN} more: type more of the name`));
    input.setAttribute("aria-activedescendant", matches.length ? `${listId}-${active}` : "");
  }

  function pick(index) {
    onPick(index);
    input.value = "";
    matches = [];
    render();
  }

  ctx.listen(input, "input", search);
  ctx.listen(input, "focus", search);
  ctx.listen(input, "blur", () => render());
  ctx.listen(input, "keydown", (event) => {
    const shown = Math.min(matches.length, MAX_SHOWN);
    if (event.key === "ArrowDown" && shown) active = (active + 1) % shown;
    else if (event.key === "ArrowUp" && shown) active = (active - 1 + shown) % shown;
    else if (event.key === "Enter" && matches.length) return pick(matches[active]);
    else if (event.key === "Escape") {
      input.value = "";
      matches = [];
    } else return;
    event.preventDefault();
    render();
  });

  return { el, update: render };
}
