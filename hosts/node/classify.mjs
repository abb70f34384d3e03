#!/usr/bin/env node
// Run the wasi-lab guest under Node's own WASI (node:wasi, preview1) and classify one image.
//
// The article's Node host, with its two bugs fixed:
//  1. `writeGuestMemory` copied `new Uint8Array(bytes.buffer)`: for a small Node Buffer that
//     is the whole shared 8 KiB pool, not the bytes, and `set` throws a RangeError. We copy
//     the Buffer's own window.
//  2. `getPrediction` passed `model_bytes.length` as the image length. We pass the image's
//     own length; `--replay-article-bug` passes the model's again, to show the guest refuse it.
//
// Prints one JSON object on stdout. Usage:
//   node hosts/node/classify.mjs --model models/efficientnet-lite0.pb \
//        --output-name <graph output> --image images/grace_hopper.jpg \
//        --preprocess efficientnet --labels labels.txt [--entry tensor|classify|article]
//        [--top 5] [--repeat N] [--wasm guest/prebuilt/wasi_lab_guest.wasm]
//        [--replay-article-bug]

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { WASI } from 'node:wasi';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const DEFAULT_WASM = `${HERE}../../guest/prebuilt/wasi_lab_guest.wasm`;
const MODES = { article: 0, efficientnet: 1, inception: 2 };
const ERRORS = {
  '-1': 'BadPointer', '-2': 'LengthMismatch', '-3': 'BadImage', '-4': 'ImageTooLarge',
  '-5': 'BadModel', '-6': 'BadHandle', '-7': 'BadArgument', '-8': 'OutOfMemory',
  '-9': 'Inference',
};

function parseArgs(argv) {
  const opts = { wasm: DEFAULT_WASM, entry: 'tensor', top: 5, preprocess: 'efficientnet' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--replay-article-bug') { opts.replayArticleBug = true; continue; }
    if (!a.startsWith('--') || i + 1 >= argv.length) throw new Error(`bad argument ${a}`);
    const key = a.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    opts[key] = argv[++i];
  }
  opts.top = Number(opts.top);
  opts.repeat = Number(opts.repeat ?? 1);
  if (!(opts.repeat >= 1)) throw new Error('--repeat needs a positive integer');
  if (!opts.model || !opts.image) throw new Error('--model and --image are required');
  if (!(opts.preprocess in MODES)) throw new Error(`unknown --preprocess ${opts.preprocess}`);
  return opts;
}

// A guest error: the negative code, its name, and the guest's own message.
class GuestError extends Error {
  constructor(fn, code, message) {
    super(`${fn}: ${message} (guest error ${code})`);
    this.fn = fn; this.code = code; this.codeName = ERRORS[String(code)] ?? 'Unknown';
    this.guestMessage = message;
  }
}

// Write `bytes` into the guest's memory and return the offset
// (the article's helper, fixed).
function writeGuestMemory(bytes, instance) {
  const len = bytes.byteLength;
  const ptr = instance.exports.alloc(len);
  if (ptr === 0) throw new GuestError('alloc', -8, lastError(instance));
  // Take `memory.buffer` after alloc: growing memory detaches
  // the previous ArrayBuffer.
  const dst = new Uint8Array(instance.exports.memory.buffer, ptr, len);
  // The article wrote `new Uint8Array(bytes.buffer)`: the whole
  // backing store. A Buffer is a window (byteOffset, byteLength)
  // onto it, so copy exactly that window.
  dst.set(new Uint8Array(bytes.buffer, bytes.byteOffset, len));
  return ptr;
}

function lastError(instance) {
  const cap = 4096;
  const ptr = instance.exports.alloc(cap);
  if (ptr === 0) return '(no memory for the error message)';
  const n = instance.exports.last_error(ptr, cap);
  const text = Buffer.from(instance.exports.memory.buffer, ptr, Math.min(Math.max(n, 0), cap))
    .toString('utf8');
  instance.exports.dealloc(ptr, cap);
  return text;
}

function check(instance, fn, result) {
  if (result < 0) throw new GuestError(fn, result, lastError(instance));
  return result;
}

function readF32(instance, ptr, count) {
  // Copy out: the view would be detached by the next memory.grow.
  const bytes = new Uint8Array(instance.exports.memory.buffer, ptr, 4 * count).slice();
  return new Float32Array(bytes.buffer);
}

function topK(probs, k, labels) {
  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b);
  return order.slice(0, k).map((i) => ({ index: i, label: labels?.[i] ?? null, prob: probs[i] }));
}

// The kit's path: parse the model once, decode the image, run the forward pass.
function runTensor(instance, opts, model, image, t) {
  const ex = instance.exports;
  let s = performance.now();
  const mptr = writeGuestMemory(model, instance);
  const name = Buffer.from(opts.outputName ?? '', 'utf8');
  let handle;
  if (name.byteLength > 0) {
    const nptr = writeGuestMemory(name, instance);
    t.write = performance.now() - s;
    s = performance.now();
    handle = check(instance, 'load_model_with_output',
      ex.load_model_with_output(mptr, model.byteLength, nptr, name.byteLength));
    ex.dealloc(nptr, name.byteLength);
  } else {
    t.write = performance.now() - s;
    s = performance.now();
    handle = check(instance, 'load_model', ex.load_model(mptr, model.byteLength));
  }
  ex.dealloc(mptr, model.byteLength);
  t.load_model = performance.now() - s;
  const outLen = check(instance, 'model_output_len', ex.model_output_len(handle));

  s = performance.now();
  const iptr = writeGuestMemory(image, instance);
  const decLen = check(instance, 'decoded_len', ex.decoded_len());
  const dec = ex.alloc(decLen);
  const out = ex.alloc(4 * outLen);
  t.write += performance.now() - s;
  s = performance.now();
  check(instance, 'decode_image', ex.decode_image(iptr, image.byteLength, MODES[opts.preprocess], dec));
  t.decode = performance.now() - s;
  s = performance.now();
  check(instance, 'infer_tensor', ex.infer_tensor(handle, dec + 8, out));
  t.infer = performance.now() - s;
  const probs = readF32(instance, out, outLen);
  // --repeat N: run the forward pass N-1 more times on the same tensor. V8 starts with its
  // baseline compiler and optimises hot functions while they run; these numbers show it.
  t.infer_runs = [t.infer];
  for (let i = 1; i < opts.repeat; i++) {
    s = performance.now();
    check(instance, 'infer_tensor', ex.infer_tensor(handle, dec + 8, out));
    t.infer_runs.push(performance.now() - s);
  }
  for (const [p, n] of [[iptr, image.byteLength], [dec, decLen], [out, 4 * outLen]]) ex.dealloc(p, n);
  return { outputs: outLen, probs };
}

// The guest's one-call path: classify(handle, img, len, mode, out, k) -> top-k (u32 index, f32 prob).
function runClassify(instance, opts, model, image, t) {
  const ex = instance.exports;
  let s = performance.now();
  const mptr = writeGuestMemory(model, instance);
  const name = Buffer.from(opts.outputName ?? '', 'utf8');
  const nptr = writeGuestMemory(name, instance);
  t.write = performance.now() - s;
  s = performance.now();
  const handle = check(instance, 'load_model_with_output',
    ex.load_model_with_output(mptr, model.byteLength, nptr, name.byteLength));
  ex.dealloc(nptr, name.byteLength);
  ex.dealloc(mptr, model.byteLength);
  t.load_model = performance.now() - s;
  s = performance.now();
  const iptr = writeGuestMemory(image, instance);
  const out = ex.alloc(8 * opts.top);
  t.write += performance.now() - s;
  s = performance.now();
  const n = check(instance, 'classify',
    ex.classify(handle, iptr, image.byteLength, MODES[opts.preprocess], out, opts.top));
  t.infer = performance.now() - s;
  const view = new DataView(ex.memory.buffer, out, 8 * opts.top);
  const top = [];
  for (let i = 0; i < Math.min(n || opts.top, opts.top); i++) {
    top.push({ index: view.getUint32(8 * i, true), prob: view.getFloat32(8 * i + 4, true) });
  }
  ex.dealloc(iptr, image.byteLength);
  ex.dealloc(out, 8 * opts.top);
  return { top };
}

// The article's path: hand both blocks to infer_from_ptrs,
// which returns a class index.
function runArticle(instance, opts, model, image, t) {
  const ex = instance.exports;
  let s = performance.now();
  const mptr = writeGuestMemory(model, instance);
  const iptr = writeGuestMemory(image, instance);
  t.write = performance.now() - s;
  // The article passed model_bytes.length for the image too;
  // --replay-article-bug does so again.
  const imgLen = opts.replayArticleBug ? model.byteLength
                                       : image.byteLength;
  s = performance.now();
  const index = check(instance, 'infer_from_ptrs',
    ex.infer_from_ptrs(mptr, model.byteLength, iptr, imgLen));
  t.infer = performance.now() - s;
  return { index };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.replayArticleBug) opts.entry = 'article';
  const [wasmBytes, model, image, labelText] = await Promise.all([
    readFile(opts.wasm), readFile(opts.model), readFile(opts.image),
    opts.labels ? readFile(opts.labels, 'utf8') : Promise.resolve(null),
  ]);
  const labels = labelText ? labelText.split('\n').filter((l, i, a) => i < a.length - 1 || l) : null;
  const t = {};

  let s = performance.now();
  const module = await WebAssembly.compile(wasmBytes);
  t.compile = performance.now() - s;
  s = performance.now();
  // Guest stdout goes to our stderr, so stdout carries only the JSON answer.
  const wasi = new WASI({ version: 'preview1', args: [], env: {}, stdout: 2, returnOnExit: true });
  const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
  wasi.initialize(instance);
  t.instantiate = performance.now() - s;
  const need = { tensor: ['load_model_with_output', 'infer_tensor', 'model_output_len'],
    classify: ['load_model_with_output', 'classify'], article: ['infer_from_ptrs'] }[opts.entry];
  if (!need) throw new Error(`unknown --entry ${opts.entry} (tensor, classify or article)`);
  const missing = need.filter((n) => typeof instance.exports[n] !== 'function');
  if (missing.length) {
    throw new Error(`${opts.wasm} does not export ${missing.join(', ')}: rebuild the guest ` +
      '(`wasi-lab build --update-prebuilt`)');
  }

  const result = {
    host: `node ${process.version} (node:wasi preview1)`, entry: opts.entry,
    image: opts.image, model: opts.model, preprocess: opts.preprocess,
    image_bytes: image.byteLength, model_bytes: model.byteLength, timings_ms: t,
  };
  // Why the article's copy was wrong: a small Buffer is a window onto a shared pool, and
  // the article copied the whole pool. Try it (into a scratch array the Buffer's size) and
  // report what happened; and say whether the model and image Buffers cover their whole
  // ArrayBuffer, the only case where the article's copy is right (its files were).
  const small = Buffer.from(opts.preprocess, 'utf8');
  let articleCopy = 'copied';
  try {
    new Uint8Array(small.byteLength).set(new Uint8Array(small.buffer));
  } catch (err) {
    articleCopy = String(err);
  }
  const whole = (b) => b.byteOffset === 0 && b.buffer.byteLength === b.byteLength;
  result.buffer_pool_demo = {
    bytes: small.byteLength, byte_offset: small.byteOffset,
    article_copy_bytes: small.buffer.byteLength, article_copy: articleCopy,
    model_is_whole_buffer: whole(model), image_is_whole_buffer: whole(image),
  };
  try {
    if (opts.entry === 'article') {
      // infer_from_ptrs answers like the article: a 1-based class number, which is the
      // plain index in a 1001-label file (background at 0) and index + 1 with 1000 labels.
      const { index } = runArticle(instance, opts, model, image, t);
      const at = labels && labels.length === 1000 ? index - 1 : index;
      Object.assign(result, { index: at, article_class: index, label: labels?.[at] ?? null, prob: null });
    } else if (opts.entry === 'classify') {
      const { top } = runClassify(instance, opts, model, image, t);
      for (const c of top) c.label = labels?.[c.index] ?? null;
      Object.assign(result, { top, index: top[0].index, label: top[0].label, prob: top[0].prob });
    } else {
      const { outputs, probs } = runTensor(instance, opts, model, image, t);
      const top = topK(probs, opts.top, labels);
      Object.assign(result, { outputs, top, index: top[0].index, label: top[0].label, prob: top[0].prob });
      // sha256 of the raw output floats (little-endian f32), for `wasi-lab hosts check`.
      result.raw_sha256 = createHash('sha256').update(new Uint8Array(probs.buffer)).digest('hex');
    }
    result.ok = true;
  } catch (err) {
    if (!(err instanceof GuestError)) throw err;
    Object.assign(result, {
      ok: false,
      error: { function: err.fn, code: err.code, name: err.codeName, message: err.guestMessage },
    });
  }
  const round = (v) => Math.round(v * 1000) / 1000;
  for (const k of Object.keys(t)) t[k] = Array.isArray(t[k]) ? t[k].map(round) : round(t[k]);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  return result.ok ? 0 : 3;
}

main().then((code) => { process.exitCode = code; }, (err) => {
  process.stderr.write(`classify.mjs: ${err.stack ?? err}\n`);
  process.exitCode = 1;
});
