// Small DOM helpers shared by every part of the widget.

/**
 * Create an element.
 *
 * @param {string} tag element name, e.g. "button"
 * @param {Object} [attrs] attributes; `class` sets className, `text` sets textContent,
 *   booleans add or omit the attribute, `null`/`undefined` are skipped
 * @param {...(Node|string)} children appended in order
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  el.append(...children.filter((c) => c !== null && c !== undefined));
  return el;
}

/** Show or hide an element with the `hidden` attribute (the stylesheet makes it win). */
export function show(el, visible) {
  el.hidden = !visible;
}

/** Set textContent only when it differs, so screen readers are not spammed. */
export function setText(el, text) {
  const value = String(text);
  if (el.textContent !== value) el.textContent = value;
}

/** Set an image's src only when it changed (re-assigning a data URL re-decodes it). */
export function setSrc(img, url) {
  const value = url || "";
  if (img.getAttribute("src") !== value) {
    if (value) img.setAttribute("src", value);
    else img.removeAttribute("src");
  }
}

/**
 * Keep notebook keyboard shortcuts away from a focusable control.
 *
 * JupyterLab and Notebook 7 bind arrow keys in command mode and preventDefault them, so a
 * focused slider would not move. Lumino skips its shortcuts for an element with this attribute.
 */
export function suppressShortcuts(el) {
  el.setAttribute("data-lm-suppress-shortcuts", "true");
  return el;
}
