// Work-around for jco 1.35.0 with preview2-shim 0.26.1: `jco types` and `jco guest-types` run a
// wasm component whose WASI filesystem has no preopened directory, so every WIT path fails with
// "No such file or directory (os error 44)". This preopens "/" in the very shim module instance
// jco-transpile uses, then calls jco-transpile's own generators.
// usage: node typegen.mjs WIT_DIR WORLD OUT_DIR [guest|host]
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { dirname, resolve } from 'node:path';
const require = createRequire(import.meta.url);
const transpileEntry = require.resolve('@bytecodealliance/jco-transpile'); // .../dist/index.js
const shimPath = require.resolve('@bytecodealliance/preview2-shim/filesystem', { paths: [dirname(transpileEntry)] });
const shim = await import(pathToFileURL(shimPath).href);
shim._addPreopen('/', '/');
const jt = await import(pathToFileURL(transpileEntry).href);
const [witDir, world, outDir, kind = 'guest'] = process.argv.slice(2);
const gen = kind === 'guest' ? jt.generateGuestTypes : jt.generateHostTypes;
const files = await gen(resolve(witDir), { worldName: world, outDir: outDir.endsWith('/') ? outDir : outDir + '/' });
await jt.writeFiles(files, false);
console.log(Object.keys(files).join('\n'));
