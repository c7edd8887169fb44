// The image strip: a thumbnail per image (click one to show it), "Compare with" to set a second
// image, and three ways to add one: drop a file on the widget, paste one, or pick one with a
// file dialog. A file travels to Python as bytes (a binary buffer), where it is checked exactly
// as the `img` argument is; a refusal is shown and changes nothing.
import { h, setText, show, suppressShortcuts } from "./dom.js";
import { versionOf } from "./state.js";

export function createImages(ctx, root) {
  const { model, store } = ctx;
  const strip = h("div", { class: "fmw-thumbs", role: "group", "aria-label": "Images" });
  const picker = h("input", { type: "file", accept: "image/*", class: "fmw-file", hidden: true, "aria-label": "Image file" });
  const add = h("button", { type: "button", class: "fmw-btn fmw-add-image", "aria-label": "Add image", title: "Add an image (or drop / paste one on the widget)" }, "+ Image");
  const compare = suppressShortcuts(h("select", { class: "fmw-select", "aria-label": "Compare with" }));
  const compareBox = h("label", { class: "fmw-control" }, h("span", { class: "fmw-label" }, "Compare with"), compare);
  const message = h("span", { class: "fmw-note fmw-images-note", role: "status" });
  const el = h("div", { class: "fmw-images" }, strip, add, picker, compareBox, message);

  async function upload(file) {
    if (!file) return;
    if (!file.type.startsWith("image/") && !/\.(png|jpe?g|gif|bmp|tiff?|webp)$/i.test(file.name)) {
      setText(message, `${file.name} is not an image file; drop a PNG, JPEG, GIF, BMP, TIFF or WebP.`);
      return;
    }
    if (file.size > store.rules.maxUpload) {
      setText(message, `${file.name} is ${(file.size / 2 ** 20).toFixed(0)} MB, over the ${store.rules.maxUpload / 2 ** 20} MB limit for an image.`);
      return;
    }
    setText(message, `Sending ${file.name}…`);
    const buffer = await file.arrayBuffer();
    ctx.send({ type: "add_image", name: file.name }, [buffer]);
  }

  ctx.listen(add, "click", () => picker.click());
  ctx.listen(picker, "change", () => {
    upload(picker.files && picker.files[0]);
    picker.value = "";
  });
  ctx.listen(root, "dragover", (event) => {
    if (store.rules.offline || ![...(event.dataTransfer?.types || [])].includes("Files")) return;
    event.preventDefault();
    root.classList.add("fmw-dropping");
  });
  ctx.listen(root, "dragleave", () => root.classList.remove("fmw-dropping"));
  ctx.listen(root, "drop", (event) => {
    root.classList.remove("fmw-dropping");
    const files = event.dataTransfer?.files;
    if (store.rules.offline || !files || !files.length) return;
    event.preventDefault();
    upload(files[0]);
  });
  ctx.listen(root, "paste", (event) => {
    const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (store.rules.offline || !file) return;
    event.preventDefault();
    upload(file);
  });
  ctx.listen(compare, "change", () => ctx.request({ compare: Number(compare.value) }));

  function update() {
    const images = model.get("_images") || [];
    const current = model.get("image_index");
    const key = JSON.stringify(images.map((i) => [i.index, i.label, i.thumb.length]));
    if (strip.dataset.key !== key) {
      strip.dataset.key = key;
      strip.replaceChildren(
        ...images.map((image) => {
          const button = h(
            "button",
            { type: "button", class: "fmw-thumb", "data-index": image.index, "aria-label": `Show ${image.label}`, title: image.label, "aria-pressed": "false" },
            h("img", { src: image.thumb, alt: "", draggable: "false" }),
            h("span", { class: "fmw-thumb-label" }, image.label),
          );
          button.disabled = !!store.rules.offline && image.index !== current; // only its grids are saved
          button.addEventListener("click", () => ctx.request({ image_index: image.index })); // dies with the button
          return button;
        }),
      );
    }
    for (const button of strip.children) {
      const index = Number(button.dataset.index);
      button.setAttribute("aria-pressed", String(index === current));
      button.classList.toggle("fmw-thumb-waiting", index === current && versionOf(model) === null);
    }
    const options = [[-1, "nothing"], ...images.filter((i) => i.index !== current).map((i) => [i.index, i.label])];
    const ckey = JSON.stringify(options);
    if (compare.dataset.key !== ckey) {
      compare.dataset.key = ckey;
      compare.replaceChildren(...options.map(([value, text]) => h("option", { value: String(value) }, text)));
    }
    compare.value = String(model.get("compare") === current ? -1 : model.get("compare"));
    compareBox.hidden = images.length < 2 || !!store.rules.offline;
    show(strip, images.length > 1);
    show(add, !store.rules.offline);
    if (message.textContent.startsWith("Sending")) setText(message, "");
  }

  ctx.on("_images _versions image_index compare _config _error", update);
  update();
  return { el, update };
}
