#!/usr/bin/env node
// One wasm engine in Node, timed on a tensor the bench hands it: `wasi-lab bench --wasm-peers`.
//
// Engines: `ort` (ONNX Runtime Web, wasm backend, on the ONNX export), `tfjs` (TensorFlow.js,
// wasm backend, on a tfjs graph model) and `guest` (the kit's own guest under node:wasi, so
// the guest's Node time sits beside the peers'). The bench keeps one process per engine and
// lets the engines take turns, so this is a small line protocol on stdin/stdout:
//
//   start:  node hosts/node/peers.mjs --engine ort|tfjs|guest --threads N --model PATH
//                --tensor FILE (raw little-endian f32, NHWC) --shape 1,224,224,3
//                [--output-name NAME] [--wasm guest.wasm]
//   ->      {"ready": true, "engine", "threads", "detail", "output_b64"}   (one untimed run)
//   stdin:  {"warm": 1, "block": 2}
//   ->      {"times_ms": [...], "cpu_ms": C, "wall_ms": W}   (cpu: all of the process's
//           threads, user + system, over the timed calls only)
//   stdin:  {"quit": true} or end of input -> exit 0
// A failure to load prints {"ready": false, "error": "..."} and exits 2.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os, { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { WASI } from 'node:wasi';

const HERE = fileURLToPath(new URL('.', import.meta.url));

function parseArgs(argv) {
  const opts = { threads: 1, wasm: `${HERE}../../guest/prebuilt/wasi_lab_guest.wasm` };
  for (let i = 0; i < argv.length; i += 2) {
    const a = argv[i];
    if (!a.startsWith('--') || i + 1 >= argv.length) throw new Error(`bad argument ${a}`);
    opts[a.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = argv[i + 1];
  }
  opts.threads = Number(opts.threads);
  if (!(Number.isInteger(opts.threads) && opts.threads >= 1)) throw new Error('--threads N');
  if (!opts.engine || !opts.model || !opts.tensor || !opts.shape) {
    throw new Error('--engine, --model, --tensor and --shape are required');
  }
  opts.shape = opts.shape.split(',').map(Number);
  return opts;
}

// ONNX Runtime Web. Its npm build's wasm backend is its own CPU kernels (MLAS), with SIMD;
// XNNPACK is not in it. Threads are emscripten pthreads, workers in Node.
async function ortEngine(opts, input) {
  const ort = await import('onnxruntime-web');
  ort.env.wasm.numThreads = opts.threads;
  ort.env.logLevel = 'error';
  const session = await ort.InferenceSession.create(opts.model, {
    executionProviders: ['wasm'], graphOptimizationLevel: 'all',
    intraOpNumThreads: opts.threads, interOpNumThreads: 1,
  });
  const name = session.inputNames[0];
  const out = session.outputNames[0];
  const feed = new ort.Tensor('float32', input, opts.shape);
  return {
    detail: `onnxruntime-web ${ort.env.versions?.web ?? '?'}, numThreads ${ort.env.wasm.numThreads}`,
    run: async () => (await session.run({ [name]: feed }))[out].data,
  };
}

// TF.js hands its pthread workers blob: URLs, which Node's Worker refuses (ERR_WORKER_PATH):
// the worker script is a Blob, and so is the backend's own factory, which each worker turns
// into a blob: URL again and reads with importScripts (fs.readFileSync under Node: the worker
// script has Node shims). So: each text Blob is also written to a temporary .cjs file,
// createObjectURL returns that file, and the worker script's own createObjectURL returns the
// factory's file.
function blobUrlsAsFiles() {
  const dir = mkdtempSync(join(tmpdir(), 'wasi-lab-tfjs-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  const NativeBlob = globalThis.Blob;
  let n = 0;
  let factoryFile = null;
  globalThis.Blob = class extends NativeBlob {
    constructor(parts = [], options) {
      super(parts, options);
      if (parts.every((p) => typeof p === 'string')) {
        this.file = join(dir, `blob${n++}.cjs`);
        let text = parts.join('');
        if (text.startsWith('var WasmBackendModule')) {
          // The factory's source refers to the bundle's own names for Node's modules.
          factoryFile = this.file;
          text = "var require$$0=require('fs'),require$$1=require('path')," +
            "require$$3=require('perf_hooks'),require$$4=require('os'),commonjsGlobal=globalThis;" +
            text;
        }
        else if (factoryFile && text.startsWith('"use strict";var Module={}')) {
          text = text.replace(/^"use strict";/, `"use strict";URL.createObjectURL=()=>${
            JSON.stringify(factoryFile)};URL.revokeObjectURL=()=>{};`);
        }
        writeFileSync(this.file, text);
      }
    }
  };
  const native = URL.createObjectURL;
  URL.createObjectURL = (blob) => blob?.file ?? native(blob);
}

// TensorFlow.js with its wasm backend (XNNPACK kernels). TF.js turns threads off under Node
// (flag WASM_HAS_MULTITHREAD_SUPPORT is false when IS_NODE); with --threads > 1 we set the
// flag ourselves and ask for that many threads, and report what the backend actually got.
async function tfjsEngine(opts, input) {
  const tf = await import('@tensorflow/tfjs-core');
  const { loadGraphModel } = await import('@tensorflow/tfjs-converter');
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  if (opts.threads > 1) {
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
    blobUrlsAsFiles();
    // The backend caps its pool at half the logical cores it sees (os.cpus() under Node):
    // on 2 cores, 1 thread. To measure N threads, show it 2 N cores; the report below says
    // how many threads it really ran.
    const cpus = os.cpus();
    if (cpus.length < 2 * opts.threads) {
      os.cpus = () => Array.from({ length: 2 * opts.threads }, (_, i) => cpus[i % cpus.length]);
    }
  }
  wasm.setThreadsCount(opts.threads);
  await tf.setBackend('wasm');
  await tf.ready();
  const got = wasm.getThreadsCount();
  if (got !== opts.threads) {
    throw new Error(`TF.js wasm backend runs ${got} thread(s), not ${opts.threads}`);
  }
  const dir = opts.model.replace(/\/?$/, '/');
  const doc = JSON.parse(await readFile(`${dir}model.json`, 'utf8'));
  const specs = [];
  const parts = [];
  for (const group of doc.weightsManifest) {
    specs.push(...group.weights);
    for (const p of group.paths) parts.push(await readFile(`${dir}${p}`));
  }
  const all = Buffer.concat(parts);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  const model = await loadGraphModel({
    load: async () => ({ modelTopology: doc.modelTopology, weightSpecs: specs, weightData,
      format: doc.format, generatedBy: doc.generatedBy, convertedBy: doc.convertedBy }),
  });
  const x = tf.tensor(input, opts.shape, 'float32');
  return {
    detail: `tfjs ${tf.version_core}, wasm backend (${got} thread${got > 1 ? 's' : ''})`,
    run: async () => {
      const y = model.execute(x);
      const data = await y.data();
      y.dispose();
      return data;
    },
  };
}

// The kit's guest under node:wasi: the tensor written into linear memory and infer_tensor on
// it, every call (what the wasmtime bench does).
async function guestEngine(opts, input) {
  const [wasmBytes, model] = await Promise.all([readFile(opts.wasm), readFile(opts.model)]);
  const wasi = new WASI({ version: 'preview1', args: [], env: {}, stdout: 2, returnOnExit: true });
  const { instance } = await WebAssembly.instantiate(wasmBytes, wasi.getImportObject());
  wasi.initialize(instance);
  const ex = instance.exports;
  const put = (bytes) => {
    const ptr = ex.alloc(bytes.byteLength);
    if (ptr === 0) throw new Error('guest alloc failed');
    new Uint8Array(ex.memory.buffer, ptr, bytes.byteLength)
      .set(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    return ptr;
  };
  const name = Buffer.from(opts.outputName ?? '', 'utf8');
  const mptr = put(model);
  const nptr = put(name);
  const handle = ex.load_model_with_output(mptr, model.byteLength, nptr, name.byteLength);
  ex.dealloc(nptr, name.byteLength);
  ex.dealloc(mptr, model.byteLength);
  if (handle < 0) throw new Error(`guest load_model_with_output failed (${handle})`);
  const outLen = ex.model_output_len(handle);
  return {
    detail: 'guest, node:wasi preview1, 1 thread',
    run: async () => {
      const ptr = put(input);
      const out = ex.alloc(4 * outLen);
      const rc = ex.infer_tensor(handle, ptr, out);
      if (rc < 0) throw new Error(`guest infer_tensor failed (${rc})`);
      const res = new Float32Array(new Uint8Array(ex.memory.buffer, out, 4 * outLen).slice().buffer);
      ex.dealloc(ptr, input.byteLength);
      ex.dealloc(out, 4 * outLen);
      return res;
    },
  };
}

const ENGINES = { ort: ortEngine, tfjs: tfjsEngine, guest: guestEngine };

function reply(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const make = ENGINES[opts.engine];
  if (!make) throw new Error(`unknown --engine ${opts.engine} (ort, tfjs or guest)`);
  const raw = await readFile(opts.tensor);
  const count = opts.shape.reduce((a, b) => a * b, 1);
  if (raw.byteLength !== 4 * count) {
    throw new Error(`${opts.tensor} has ${raw.byteLength} bytes; shape ${opts.shape} needs ${4 * count}`);
  }
  const input = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  let engine;
  try {
    engine = await make(opts, input);
  } catch (err) {
    reply({ ready: false, engine: opts.engine, threads: opts.threads, error: String(err?.message ?? err) });
    process.exitCode = 2;
    return;
  }
  const first = Float32Array.from(await engine.run());
  reply({ ready: true, engine: opts.engine, threads: opts.threads, detail: engine.detail,
    output_b64: Buffer.from(first.buffer).toString('base64') });
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const cmd = JSON.parse(line);
    if (cmd.quit) break;
    for (let i = 0; i < (cmd.warm ?? 0); i++) await engine.run();
    const times = [];
    const cpu0 = process.cpuUsage();
    const wall0 = performance.now();
    for (let i = 0; i < (cmd.block ?? 1); i++) {
      const s = performance.now();
      await engine.run();
      times.push(performance.now() - s);
    }
    const wall = performance.now() - wall0;
    const cpu = process.cpuUsage(cpu0);
    reply({ times_ms: times, cpu_ms: (cpu.user + cpu.system) / 1000, wall_ms: wall });
  }
  lines.close();
  process.exit(0);  // ends any worker threads the engine started
}

main().catch((err) => {
  process.stderr.write(`peers.mjs: ${err.stack ?? err}\n`);
  process.exitCode = 1;
});
