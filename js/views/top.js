// What fires the selected channel across the last scan: a strip of its top patches (the input
// region its strongest position sees), with scores. A click opens that image.
import { h, setText, show } from "../dom.js";
import { formatNumber } from "../state.js";

export function createTopStrip(ctx) {
  const { model, store } = ctx;
  const heading = h("div", { class: "fmw-panel-title" });
  const list = h("ol", { class: "fmw-top-list" });
  const note = h("div", { class: "fmw-note" });
  const el = h("figure", { class: "fmw-panel fmw-top", hidden: true }, heading, list, note);

  function update() {
    const top = model.get("_top") || {};
    const items = top.items || [];
    const current = top.layer === model.get("layer") && top.channel === model.get("channel");
    show(el, items.length > 0 && current);
    if (!items.length || !current) return;
    setText(heading, `What fires channel ${top.channel} across ${top.n_images} scanned images`);
    const key = JSON.stringify([top.layer, top.channel, top.scan]);
    if (list.dataset.key !== key) {
      list.dataset.key = key;
      list.replaceChildren(
        ...items.map((item) => {
          const button = h(
            "button",
            { type: "button", class: "fmw-top-item", "aria-label": `Open scanned image ${item.index} (score ${formatNumber(item.score)})`, title: String(item.source) },
            item.thumb
              ? h("img", { src: item.thumb, alt: "", draggable: "false" })
              : h("span", { class: "fmw-top-missing" }, "no preview"),
            h("span", { class: "fmw-top-score" }, formatNumber(item.score)),
          );
          button.disabled = !!store.rules.offline;
          button.addEventListener("click", () => ctx.send({ type: "open_top", rank: item.rank })); // dies with the button
          return h("li", {}, button);
        }),
      );
    }
    setText(note, "Each patch is the part of the input the channel's strongest position sees; the number is that maximum. Click one to open the image.");
  }

  return { el, update };
}
