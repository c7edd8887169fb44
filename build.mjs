// Bundles the front end into src/fmwidget/static/ (git-ignored; built at install by
// hatch-jupyter-builder's `npm run build`).
//
//   node build.mjs           one minified build: widget.js (one self-contained ESM), widget.css
//                            and embed/{require.js, embed-amd.js}
//   node build.mjs --watch   rebuild on change (pair with ANYWIDGET_HMR=1 in the kernel)
//
// The ESM must have no imports left: VS Code and Colab load `_esm` as a single file, and the
// widget must work offline, so nothing may come from a CDN at run time.
//
// It also copies require.js and the widgets HTML manager (embed-amd.js) from node_modules to
// static/embed/, for fmwidget.export.to_html: ipywidgets' own embedding loads both from a CDN
// and so renders nothing offline.
import { copyFileSync, mkdirSync } from "node:fs";
import * as esbuild from "esbuild";

const watch = process.argv.includes("--watch");
const outdir = "src/fmwidget/static";

const common = {
  bundle: true,
  minify: !watch,
  sourcemap: watch ? "inline" : false,
  logLevel: "info",
  target: ["es2020"],
};

const builds = [
  { ...common, entryPoints: ["js/widget.js"], outfile: `${outdir}/widget.js`, format: "esm" },
  { ...common, entryPoints: ["js/style.css"], outfile: `${outdir}/widget.css` },
];

const embedAssets = {
  "require.js": "node_modules/requirejs/require.js",
  "embed-amd.js": "node_modules/@jupyter-widgets/html-manager/dist/embed-amd.js",
};
mkdirSync(`${outdir}/embed`, { recursive: true });
for (const [name, source] of Object.entries(embedAssets)) {
  copyFileSync(source, `${outdir}/embed/${name}`);
}

if (watch) {
  for (const options of builds) {
    const ctx = await esbuild.context(options);
    await ctx.watch();
  }
  console.log("watching js/ for changes ...");
} else {
  await Promise.all(builds.map((options) => esbuild.build(options)));
}
