// Bundles the front end into src/fmwidget/static/ (git-ignored; built at install by
// hatch-jupyter-builder's `npm run build`).
//
//   node build.mjs           one minified build: widget.js (one self-contained ESM) + widget.css
//   node build.mjs --watch   rebuild on change (pair with ANYWIDGET_HMR=1 in the kernel)
//
// The ESM must have no imports left: VS Code and Colab load `_esm` as a single file, and the
// widget must work offline, so nothing may come from a CDN at run time.
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

if (watch) {
  for (const options of builds) {
    const ctx = await esbuild.context(options);
    await ctx.watch();
  }
  console.log("watching js/ for changes ...");
} else {
  await Promise.all(builds.map((options) => esbuild.build(options)));
}
