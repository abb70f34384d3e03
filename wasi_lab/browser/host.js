// The wasi-lab guest in a browser tab, run by the browser's own WebAssembly engine.
//
// The same prebuilt wasi_lab_guest.wasm that wasmtime (Python) and Node run. Three parts:
//  1. a WASI shim of our own for exactly the six imports the guest has
//     (`wasi-lab inspect --json`): fd_write, environ_get, environ_sizes_get, clock_time_get,
//     random_get, proc_exit. Nothing else is provided, so a module that needs more fails at
//     instantiation with the missing name instead of half-working;
//  2. the guest driver, a mirror of hosts/node/classify.mjs (`runTensor`): write the model,
//     load_model_with_output, write the image, decode_image, infer_tensor, copy the raw floats;
//  3. the anywidget view (`render`): a sample picker and an upload, the top-5, the timings
//     beside wasmtime's, a page map per stage drawn from this tab's `memory.buffer`, and the
//     kernel's verdict on the raw bytes.
// Nothing is fetched: the module, the model and the image arrive as bytes from the caller.

export const PAGE_SIZE = 65536;
export const MODES = { article: 0, efficientnet: 1, inception: 2 };
const ERRNO = { SUCCESS: 0, BADF: 8, INVAL: 28, FAULT: 21 };
const ERRORS = {
  '-1': 'BadPointer', '-2': 'LengthMismatch', '-3': 'BadImage', '-4': 'ImageTooLarge',
  '-5': 'BadModel', '-6': 'BadHandle', '-7': 'BadArgument', '-8': 'OutOfMemory',
  '-9': 'Inference',
};
//: Region colours: the vocabulary of wasi_lab/views/memviz.py's page map (REGIONS).
export const REGION_COLORS = {
  'data + stack': '#4c72b0', 'heap (guest)': '#dd8452', model: '#55a868', image: '#c44e52',
  'other block': '#8172b3', 'freed block': '#b8e0b9', 'untouched (zero)': '#e8e8e8',
};

// ------------------------------------------------------------------ the WASI shim

/** The guest called proc_exit: unwind out of wasm with the exit code. */
export class WasiExit extends Error {
  constructor(code) { super(`the guest called proc_exit(${code})`); this.code = code; }
}

/** A guest entry point refused its input (negative code) with its own message. */
export class GuestError extends Error {
  constructor(fn, code, message) {
    super(`${fn}: ${message} (guest error ${code})`);
    this.fn = fn; this.code = code; this.codeName = ERRORS[String(code)] ?? 'Unknown';
    this.guestMessage = message;
  }
}

/**
 * wasi_snapshot_preview1 for this guest. `getMemory` is called on every access, because
 * memory.grow detaches the previous ArrayBuffer: a view taken before a call may be dead after.
 * Guest output on fd 1 and 2 goes to `consoleLines` (a list the caller shows).
 */
export function makeWasi(getMemory, consoleLines = []) {
  const decoder = new TextDecoder();
  const pending = { 1: '', 2: '' };
  const view = () => new DataView(getMemory().buffer);
  const bytes = () => new Uint8Array(getMemory().buffer);
  const imports = {
    fd_write(fd, iovs, iovsLen, nwrittenPtr) {
      if (fd !== 1 && fd !== 2) return ERRNO.BADF;
      const v = view();
      let written = 0;
      for (let i = 0; i < iovsLen; i++) {
        const ptr = v.getUint32(iovs + 8 * i, true);
        const len = v.getUint32(iovs + 8 * i + 4, true);
        pending[fd] += decoder.decode(bytes().subarray(ptr, ptr + len), { stream: true });
        written += len;
      }
      const lines = pending[fd].split('\n');
      pending[fd] = lines.pop();
      for (const line of lines) consoleLines.push(`${fd === 1 ? 'stdout' : 'stderr'}: ${line}`);
      view().setUint32(nwrittenPtr, written, true);
      return ERRNO.SUCCESS;
    },
    // No environment: zero variables, zero bytes (as `env: {}` in the Node host).
    environ_sizes_get(countPtr, sizePtr) {
      const v = view();
      v.setUint32(countPtr, 0, true);
      v.setUint32(sizePtr, 0, true);
      return ERRNO.SUCCESS;
    },
    environ_get() { return ERRNO.SUCCESS; },
    // Clock 0 is the wall clock, the others monotonic; both from performance.now (ms, float).
    clock_time_get(id, _precision, timePtr) {
      if (id < 0 || id > 3) return ERRNO.INVAL;
      const ms = id === 0 ? performance.timeOrigin + performance.now() : performance.now();
      view().setBigUint64(timePtr, BigInt(Math.round(ms * 1e6)), true);
      return ERRNO.SUCCESS;
    },
    // getRandomValues fills at most 65536 bytes per call.
    random_get(ptr, len) {
      for (let off = 0; off < len; off += 65536) {
        crypto.getRandomValues(bytes().subarray(ptr + off, ptr + Math.min(len, off + 65536)));
      }
      return ERRNO.SUCCESS;
    },
    proc_exit(code) { throw new WasiExit(code); },
  };
  return { wasi_snapshot_preview1: imports };
}

// ------------------------------------------------------------------ the guest driver

/** A Uint8Array over whatever binary the caller has (DataView from a widget, ArrayBuffer ...). */
export function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new TypeError(`expected bytes, got ${Object.prototype.toString.call(data)}`);
}

/** One instance of the guest in this tab, with the blocks the host wrote (for the page map). */
export class BrowserGuest {
  static async compile(wasmBytes) {
    const s = performance.now();
    const module = await WebAssembly.compile(asBytes(wasmBytes));
    return { module, compileMs: performance.now() - s };
  }

  static async create(module) {
    const g = new BrowserGuest();
    const s = performance.now();
    const imports = makeWasi(() => g.instance.exports.memory, g.console);
    g.instance = await WebAssembly.instantiate(module, imports);
    g.instantiateMs = performance.now() - s;
    return g;
  }

  constructor() { this.console = []; this.blocks = []; this.instance = null; this.trapped = null; }

  get ex() { return this.instance.exports; }
  get pages() { return this.ex.memory.buffer.byteLength / PAGE_SIZE; }

  lastError() {
    const cap = 4096;
    const ptr = this.ex.alloc(cap);
    if (ptr === 0) return '(no memory for the error message)';
    const n = this.ex.last_error(ptr, cap);
    const text = new TextDecoder().decode(
      new Uint8Array(this.ex.memory.buffer, ptr, Math.min(Math.max(n, 0), cap)));
    this.ex.dealloc(ptr, cap);
    return text;
  }

  check(fn, result) {
    if (result < 0) throw new GuestError(fn, result, this.lastError());
    return result;
  }

  alloc(len, label) {
    const ptr = this.ex.alloc(len);
    if (ptr === 0) throw new GuestError('alloc', -8, this.lastError());
    this.blocks.push({ ptr, len, label, freed: false });
    return ptr;
  }

  dealloc(ptr, len) {
    this.check('dealloc', this.ex.dealloc(ptr, len));
    for (const b of this.blocks) if (b.ptr === ptr && !b.freed) b.freed = true;
  }

  /** Copy `data` into a fresh block. `memory.buffer` is taken AFTER alloc: alloc may grow
   * memory, and growing detaches every ArrayBuffer taken before. */
  write(data, label) {
    const src = asBytes(data);
    const ptr = this.alloc(src.byteLength, label);
    new Uint8Array(this.ex.memory.buffer, ptr, src.byteLength).set(src);
    return ptr;
  }

  /** Copy out: a view would be detached by the next memory.grow. */
  readBytes(ptr, len) { return new Uint8Array(this.ex.memory.buffer, ptr, len).slice(); }

  /** Parse the model once; the raw bytes are freed, the parsed graph stays resident. */
  loadModel(modelBytes, outputName) {
    const model = asBytes(modelBytes);
    const name = new TextEncoder().encode(outputName ?? '');
    const s = performance.now();
    const mptr = this.write(model, 'model');
    let handle;
    if (name.byteLength > 0) {
      const nptr = this.write(name, 'output name');
      handle = this.check('load_model_with_output',
        this.ex.load_model_with_output(mptr, model.byteLength, nptr, name.byteLength));
      this.dealloc(nptr, name.byteLength);
    } else {
      handle = this.check('load_model', this.ex.load_model(mptr, model.byteLength));
    }
    this.dealloc(mptr, model.byteLength);
    this.handle = handle;
    this.outputLen = this.check('model_output_len', this.ex.model_output_len(handle));
    return performance.now() - s;
  }

  /** decode_image + infer_tensor, as classify.mjs's runTensor and Classifier.scores do.
   * `onStage(name)` is called after the image is written and after inference (page maps). */
  infer(imageBytes, mode, onStage = () => {}) {
    const image = asBytes(imageBytes);
    const t = {};
    const owned = [];
    try {
      let s = performance.now();
      const iptr = this.write(image, 'image');
      owned.push([iptr, image.byteLength]);
      const decLen = this.check('decoded_len', this.ex.decoded_len());
      const dec = this.alloc(decLen, 'image tensor');
      owned.push([dec, decLen]);
      const out = this.alloc(4 * this.outputLen, 'output');
      owned.push([out, 4 * this.outputLen]);
      t.write = performance.now() - s;
      onStage('image written');
      s = performance.now();
      this.check('decode_image', this.ex.decode_image(iptr, image.byteLength, mode, dec));
      t.decode = performance.now() - s;
      s = performance.now();
      this.check('infer_tensor', this.ex.infer_tensor(this.handle, dec + 8, out));
      t.infer = performance.now() - s;
      const raw = this.readBytes(out, 4 * this.outputLen);
      const size = new DataView(this.readBytes(dec, 8).buffer);
      onStage('inferred');
      return { raw, timings: t, width: size.getUint32(0, true), height: size.getUint32(4, true) };
    } catch (err) {
      // A trap leaves the instance in an unknown state: the caller must make a new one.
      if (err instanceof WebAssembly.RuntimeError || err instanceof WasiExit) this.trapped = err;
      throw err;
    } finally {
      // Refused input (bad image ...) loses nothing: every block this call took is freed.
      if (!this.trapped) for (const [p, n] of owned) this.dealloc(p, n);
    }
  }

  heapBase() {
    const g = this.ex.__heap_base;
    return g instanceof WebAssembly.Global ? Number(g.value) : 0;
  }

  /** One region name per 64 KiB page, by the rules of memviz.page_regions: a page overlapping a
   * block this host wrote takes that block's region (largest overlap wins); else below
   * __heap_base is data + stack; else non-zero is the guest's heap; else untouched. */
  pageRegions() {
    const mem = new Uint8Array(this.ex.memory.buffer);
    const n = mem.byteLength / PAGE_SIZE;
    const heapBase = this.heapBase();
    const regions = [];
    for (let p = 0; p < n; p++) {
      const lo = p * PAGE_SIZE;
      const hi = lo + PAGE_SIZE;
      const overlap = {};
      for (const b of this.blocks) {
        const o = Math.min(hi, b.ptr + b.len) - Math.max(lo, b.ptr);
        if (o <= 0) continue;
        const region = b.freed ? 'freed block'
          : b.label === 'model' ? 'model' : b.label === 'image' ? 'image' : 'other block';
        overlap[region] = (overlap[region] ?? 0) + o;
      }
      const best = Object.entries(overlap).sort((a, b) => b[1] - a[1])[0];
      if (best) { regions.push(best[0]); continue; }
      if (lo < heapBase) { regions.push('data + stack'); continue; }
      let nonzero = false;
      const words = new Uint32Array(mem.buffer, lo, PAGE_SIZE / 4);
      for (let i = 0; i < words.length; i++) if (words[i] !== 0) { nonzero = true; break; }
      regions.push(nonzero ? 'heap (guest)' : 'untouched (zero)');
    }
    return regions;
  }
}

function topK(probs, k) {
  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b);
  return order.slice(0, k).map((i) => ({ index: i, prob: probs[i] }));
}

function round3(v) { return Math.round(v * 1000) / 1000; }

/**
 * The whole request in one call (hosts check and the tests use it; the widget the same steps):
 * compile, instantiate, load the model, classify one image. Returns plain data: the top-k, the
 * raw output bytes (little-endian f32, exactly what the guest wrote), timings in ms, and the
 * page map (region per page) after each stage.
 */
export async function classifyOnce({ wasm, model, outputName, image, mode = 1, top = 5 }) {
  const { module, compileMs } = await BrowserGuest.compile(wasm);
  const guest = await BrowserGuest.create(module);
  const stages = [{ stage: 'instantiated', regions: guest.pageRegions() }];
  const loadMs = guest.loadModel(model, outputName);
  stages.push({ stage: 'model loaded', regions: guest.pageRegions() });
  const r = guest.infer(image, mode, (stage) => stages.push({ stage, regions: guest.pageRegions() }));
  const probs = new Float32Array(r.raw.buffer.slice(0));
  return {
    host: `browser: ${navigator.userAgent.match(/(HeadlessChrome|Chrome|Firefox|Safari)\/[\d.]+/)?.[0] ?? navigator.userAgent}`,
    top: topK(probs, top),
    raw: r.raw,
    width: r.width,
    height: r.height,
    pages: guest.pages,
    stages,
    console: guest.console,
    timings_ms: {
      compile: round3(compileMs), instantiate: round3(guest.instantiateMs),
      load_model: round3(loadMs), write: round3(r.timings.write),
      decode: round3(r.timings.decode), infer: round3(r.timings.infer),
    },
  };
}

// ------------------------------------------------------------------ drawing

/** A page map on a canvas: one square per page, coloured by region, 32 pages a row. */
export function drawPageMap(canvas, regions, { cols = 32, cell = 7 } = {}) {
  const rows = Math.max(1, Math.ceil(regions.length / cols));
  canvas.width = cols * cell;
  canvas.height = rows * cell;
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#ffffff';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  regions.forEach((r, p) => {
    ctx.fillStyle = REGION_COLORS[r] ?? '#000000';
    ctx.fillRect((p % cols) * cell, Math.floor(p / cols) * cell, cell - 1, cell - 1);
  });
}

function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'style') e.style.cssText = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function legend() {
  const box = h('div', { class: 'wasi-browser-legend', style: 'font-size:12px; margin:4px 0' });
  for (const [name, color] of Object.entries(REGION_COLORS)) {
    box.append(h('span', { style: `display:inline-block; width:10px; height:10px; margin:0 4px 0 10px; background:${color}; border:1px solid #999` }), name);
  }
  return box;
}

function timingsTable(browser, wasmtime) {
  const rows = [['compile', 'compile'], ['instantiate', 'instantiate'], ['model load', 'load_model'],
    ['write', 'write'], ['decode', 'decode'], ['inference', 'infer']];
  const fmt = (v) => (typeof v === 'number' ? v.toFixed(1) : '…');
  const table = h('table', { class: 'wasi-browser-timings', style: 'border-collapse:collapse; font-size:13px' });
  table.append(h('tr', {}, h('th', { style: 'text-align:left; padding-right:12px' }, 'ms'),
    h('th', { style: 'padding-right:12px' }, 'this tab'), h('th', {}, 'wasmtime (kernel)')));
  for (const [label, key] of rows) {
    table.append(h('tr', {}, h('td', {}, label),
      h('td', { style: 'text-align:right; padding-right:12px' }, fmt(browser?.[key])),
      h('td', { style: 'text-align:right' }, fmt(wasmtime?.[key]))));
  }
  return table;
}

// ------------------------------------------------------------------ the widget (anywidget)

async function render({ model, el }) {
  const labels = model.get('labels');
  const status = h('div', { class: 'wasi-browser-status', style: 'margin:4px 0' }, 'compiling the module in this tab…');
  const select = h('select', { class: 'wasi-browser-sample' });
  for (const name of model.get('sample_names')) select.append(h('option', { value: name }, name));
  const upload = h('input', { type: 'file', accept: 'image/png,image/jpeg', class: 'wasi-browser-upload' });
  const top5 = h('ol', { class: 'wasi-browser-top5', style: 'margin:4px 0' });
  const timings = h('div', { class: 'wasi-browser-timing-box' });
  const verdict = h('div', { class: 'wasi-browser-verdict', style: 'margin:4px 0; font-weight:bold' });
  const maps = h('div', { class: 'wasi-browser-maps', style: 'display:flex; gap:12px; flex-wrap:wrap' });
  const consoleBox = h('pre', { class: 'wasi-browser-console', style: 'font-size:11px; max-height:6em; overflow:auto' });
  el.append(h('div', { class: 'wasi-browser-host' },
    h('div', {}, 'sample: ', select, '  or upload: ', upload), status, top5, timings, verdict,
    legend(), maps, consoleBox));

  let guest = null;
  let compiled = null;
  let compileMs = null;
  let loadMs = null;
  let lastBrowserTimings = null;
  let seq = 0;
  try {
    compiled = await BrowserGuest.compile(model.get('wasm'));
    compileMs = compiled.compileMs;
    guest = await BrowserGuest.create(compiled.module);
    loadMs = guest.loadModel(model.get('model_bytes'), model.get('output_name'));
  } catch (err) {
    status.textContent = `the guest did not start in this tab: ${err.message ?? err}`;
    return;
  }

  const drawStage = (stage) => {
    const canvas = h('canvas', { class: 'wasi-browser-pagemap', 'data-stage': stage });
    drawPageMap(canvas, guest.pageRegions());
    maps.append(h('figure', { style: 'margin:0' }, canvas,
      h('figcaption', { style: 'font-size:12px' }, `${stage}: ${guest.pages} pages`)));
  };

  const showVerdict = () => {
    const c = model.get('comparison');
    if (!c || c.seq !== seq) return; // an answer about an earlier image
    timings.replaceChildren(timingsTable(lastBrowserTimings, c.wasmtime_timings_ms));
    if (c.error) { verdict.textContent = `the kernel could not compare: ${c.error}`; return; }
    verdict.textContent = c.identical
      ? `raw outputs identical to wasmtime's (sha256 ${c.sha256.slice(0, 16)}…)`
      : `raw outputs differ from wasmtime's: max abs diff ${c.max_abs_diff}`;
    verdict.dataset.identical = String(c.identical);
  };

  const classify = (bytes, name) => {
    maps.replaceChildren();
    drawStage('model loaded');
    let r;
    try {
      r = guest.infer(bytes, model.get('mode'), drawStage);
    } catch (err) {
      if (!guest.trapped) status.dataset.liveBlocks = String(guest.ex.live_allocations());
      top5.replaceChildren();
      verdict.textContent = '';
      status.textContent = `${name}: ${err.message ?? err}`;
      if (guest.trapped) {
        // Start over from the compiled module, as the kernel's Guest.reset() does.
        status.textContent += ' (the guest trapped: a fresh instance is being made)';
        BrowserGuest.create(compiled.module).then((g) => {
          g.loadModel(model.get('model_bytes'), model.get('output_name'));
          guest = g;
        });
      }
      return;
    }
    // The guest's count of live blocks: the same after every request, or the host leaks.
    status.dataset.liveBlocks = String(guest.ex.live_allocations());
    const probs = new Float32Array(r.raw.buffer.slice(0));
    top5.replaceChildren(...topK(probs, 5).map((c) => h('li', {},
      `${labels[c.index] ?? c.index} (${c.index}): ${c.prob.toFixed(4)}`)));
    lastBrowserTimings = { compile: compileMs, instantiate: guest.instantiateMs, load_model: loadMs, ...r.timings };
    status.textContent = `${name} → ${labels[topK(probs, 1)[0].index]} (in this tab, ${r.width}×${r.height})`;
    consoleBox.textContent = guest.console.join('\n');
    seq += 1;
    timings.replaceChildren(timingsTable(lastBrowserTimings, null));
    verdict.textContent = 'comparing the raw outputs with wasmtime’s in the kernel…';
    verdict.dataset.identical = '';
    // The kernel runs the same bytes under wasmtime and compares the raw floats.
    model.send({ kind: 'result', seq, name, timings_ms: lastBrowserTimings, pages: guest.pages },
      undefined, [r.raw.buffer, bytes.slice().buffer]);
  };

  model.on('change:comparison', showVerdict);
  model.on('change:image', () => classify(asBytes(model.get('image')).slice(), model.get('image_name')));
  select.addEventListener('change', () => {
    model.set('image_name', select.value);
    model.save_changes();
  });
  upload.addEventListener('change', async () => {
    const file = upload.files?.[0];
    if (file) classify(new Uint8Array(await file.arrayBuffer()), file.name);
  });
  // The first image: whatever the kernel already sent.
  const first = model.get('image');
  if (first && asBytes(first).byteLength) classify(asBytes(first).slice(), model.get('image_name'));
  else status.textContent = 'pick an image';
}

export default { render };
