// One widget's data in this page: the decoded rules and a bounded cache of the grids received.
// Created once per model (anywidget's `initialize`, which removes it when the model closes)
// and shared by every view of it. anywidget hands `initialize` and each `render` a different
// proxy of the model, so the stores are keyed by the widget's own id (`_config.uid`): nothing
// is shared between widgets even where this module runs once per page (marimo).
import { createCache } from "./cache.js";
import { unpack } from "./codec.js";
import { readRules } from "./rules.js";

const DATA = ["_maps", "_filters", "_map", "_compare"];
const stores = new Map();

function createStore(model) {
  let rules = readRules(model.get("_config"));
  const cache = createCache(rules.cacheBytes);
  const listeners = new Set();

  function notify() {
    for (const fn of listeners) fn();
  }

  function ingest(payload) {
    if (payload && !payload.kind && typeof payload === "object") {
      for (const inner of Object.values(payload)) if (inner && inner.kind) ingest(inner); // _compare
      return;
    }
    const entry = unpack(payload, rules.format);
    if (entry) cache.put(entry);
  }

  for (const payload of model.get("_bundle") || []) ingest(payload); // a saved page's grids
  for (const name of DATA) ingest(model.get(name));

  const handlers = DATA.map((name) => [name, () => { ingest(model.get(name)); notify(); }]);
  handlers.push(["_config", () => { rules = readRules(model.get("_config")); notify(); }]);
  for (const [name, fn] of handlers) model.on(`change:${name}`, fn);

  return {
    cache,
    get rules() {
      return rules;
    },
    /** Call `fn()` whenever new data arrived; returns the unsubscribe function. */
    subscribe(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    dispose() {
      for (const [name, fn] of handlers) model.off(`change:${name}`, fn);
      listeners.clear();
      stores.delete(uid(model));
    },
  };
}

function uid(model) {
  return (model.get("_config") || {}).uid || "";
}

/** The model's store (created on first use). */
export function storeFor(model) {
  const id = uid(model);
  let store = stores.get(id);
  if (!store) {
    store = createStore(model);
    if (id) stores.set(id, store);
  }
  return store;
}
