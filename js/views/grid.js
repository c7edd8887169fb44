// Maps and filters views: the grid picture, paging, tile click -> channel, the selected
// tile's outline and the hover zoom.
import { h, setSrc, setText, show } from "../dom.js";
import { channelChanges, channelCount, currentGrid, currentLayer, gridMatches, hasFilters, IN_PAGE_SIZE, namedGrid } from "../state.js";
import { channelRect, displayScale, pictureCoords, tileAt } from "../tiles.js";

function pager(what, labelClass) {
  const prev = h("button", { type: "button", class: "fmw-btn", "aria-label": `Previous ${what}`, title: `Previous ${what}` }, "‹");
  const next = h("button", { type: "button", class: "fmw-btn", "aria-label": `Next ${what}`, title: `Next ${what}` }, "›");
  const label = h("span", { class: labelClass });
  return { prev, next, label, el: h("div", { class: "fmw-pager" }, prev, label, next) };
}

function range(first, count, total) {
  const last = Math.min(total, first + count) - 1;
  return last > first ? `${first}–${last}` : `${first}`;
}

/**
 * Build the grid view.
 *
 * @param {Object} ctx widget context
 * @param {{attach: Function}} hover the shared hover zoom
 */
export function createGridView(ctx, hover) {
  const { model, pictures } = ctx;
  const pages = pager("page", "fmw-page-label");
  const inPages = pager("input page", "fmw-in-page-label");
  const img = h("img", { class: "fmw-grid-img", alt: "feature maps", draggable: "false" });
  const selected = h("div", { class: "fmw-tile-selected", "aria-hidden": "true", hidden: true });
  const frame = h("div", { class: "fmw-grid-frame" }, img, selected);
  const empty = h("div", { class: "fmw-empty", hidden: true });
  const el = h(
    "div",
    { class: "fmw-grid-view" },
    h("div", { class: "fmw-pagers" }, pages.el, inPages.el),
    h("div", { class: "fmw-grid-scroll" }, frame),
    empty,
  );

  // The meta of the picture on screen, which may be one sent ahead (the kernel's answer for
  // the current traits has not arrived yet): clicks, hover and the outline must use it.
  let shownMeta = {};
  const meta = () => shownMeta;
  let resent = "";

  ctx.listen(img, "click", (event) => {
    const at = pictureCoords(img, event);
    const m = meta();
    const index = at ? tileAt(m, at.x, at.y) : -1;
    const channel = index >= 0 && m.channels ? m.channels[index] : -1;
    if (channel === undefined || channel < 0) return;
    ctx.request(channelChanges(model, channel));
  });
  hover.attach(img, meta);

  const turn = (key, delta) => () => ctx.request({ [key]: Math.max(0, model.get(key) + delta) });
  ctx.listen(pages.prev, "click", turn("page", -1));
  ctx.listen(pages.next, "click", turn("page", 1));
  ctx.listen(inPages.prev, "click", turn("in_page", -1));
  ctx.listen(inPages.next, "click", turn("in_page", 1));

  function updateOutline() {
    const m = meta();
    const box = img.getAttribute("src") ? channelRect(m, model.get("channel")) : null;
    show(selected, !!box);
    if (!box) return;
    const pad = m.pad || 0;
    // percentages of the picture, so the outline follows any CSS size
    selected.style.left = `${((box.x - pad / 2) / m.width) * 100}%`;
    selected.style.top = `${((box.y - pad / 2) / m.height) * 100}%`;
    selected.style.width = `${((box.w + pad) / m.width) * 100}%`;
    selected.style.height = `${((box.h + pad) / m.height) * 100}%`;
  }

  function updatePagers(m) {
    const view = model.get("view");
    const nPages = m.n_pages || 1;
    const page = model.get("page");
    const size = model.get("page_size");
    const count = channelCount(currentLayer(model));
    setText(pages.label, `Page ${page + 1}/${nPages} · channels ${range(page * size, size, count)} of ${count}`);
    pages.prev.disabled = page <= 0;
    pages.next.disabled = page >= nPages - 1;

    const nIn = m.n_in_pages || 1;
    const inPage = model.get("in_page");
    const inCount = (currentLayer(model) || {}).weight_shape?.[1] ?? 0;
    show(inPages.el, view === "filters" && nIn > 1);
    setText(inPages.label, `Inputs ${range(inPage * IN_PAGE_SIZE, IN_PAGE_SIZE, inCount)} of ${inCount}`);
    inPages.prev.disabled = inPage <= 0;
    inPages.next.disabled = inPage >= nIn - 1;
  }

  /** The picture for the current traits if this page has it, else keep the last one. */
  function updatePicture(noWeights) {
    const named = namedGrid(model, pictures);
    const pic = currentGrid(model, pictures, named) || named;
    if (!pic.url && named.meta.picture && named.meta.picture !== resent && gridMatches(named.meta, model)) {
      resent = named.meta.picture; // the kernel counted on a picture this page lacks: ask once
      ctx.send({ type: "resend_grid" });
    }
    if (noWeights) {
      setSrc(img, "");
    } else if (pic.url) {
      shownMeta = pic.meta;
      setSrc(img, pic.url);
    }
    ctx.shown(shownMeta);
  }

  function update() {
    const view = model.get("view");
    const info = currentLayer(model);
    const noWeights = view === "filters" && !hasFilters(info);
    show(empty, noWeights);
    setText(empty, noWeights && info ? `${info.name} (${info.type}) has no filters to show. Choose a conv layer or the feature maps view.` : "");
    updatePicture(noWeights);
    const m = meta();
    show(frame, !noWeights && !!img.getAttribute("src"));
    img.alt = view === "filters" ? "filters of the current layer" : "feature maps of the current layer";
    if (m.width) {
      const scale = displayScale(m, 64);
      frame.style.width = `${m.width * scale}px`;
    }
    updatePagers(m);
    updateOutline();
  }

  ctx.on("_grid _grid_id _grid_meta _layers layer view page page_size in_page", update);
  ctx.cleanup(pictures.subscribe(update));
  ctx.on("channel", updateOutline);
  update();
  return { el, update };
}
