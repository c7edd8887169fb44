// Previous / next page buttons with a label.
import { h } from "../dom.js";

export function createPager(ctx, what, labelClass, onTurn) {
  const prev = h("button", { type: "button", class: "fmw-btn", "aria-label": `Previous ${what}`, title: `Previous ${what}` }, "‹");
  const next = h("button", { type: "button", class: "fmw-btn", "aria-label": `Next ${what}`, title: `Next ${what}` }, "›");
  const label = h("span", { class: labelClass });
  ctx.listen(prev, "click", () => onTurn(-1));
  ctx.listen(next, "click", () => onTurn(1));
  return { prev, next, label, el: h("div", { class: "fmw-pager" }, prev, label, next) };
}

/** "3" or "0–63". */
export function span(first, last) {
  return last > first ? `${first}–${last}` : `${first}`;
}
