// The JS pitfall: a view of `memory.buffer` taken before the guest grows its memory.
// Usage: node detach_on_grow.mjs trusting_abi.wasm   (prints one line of JSON)
//
// `memory.grow` replaces `memory.buffer` with a new, larger ArrayBuffer and *detaches* the
// old one: every Uint8Array made over it now has length 0. `alloc` may grow memory, so a
// view made before `alloc` can be dead by the time the bytes are copied. The article's
// writeGuestMemory makes its view after `alloc`, which is the right order.
import { readFileSync } from "node:fs";

const { instance } = await WebAssembly.instantiate(readFileSync(process.argv[2]), {});
const { memory, alloc } = instance.exports;
const data = new Uint8Array(100000).fill(7); // more than one page: alloc has to grow memory

const early = new Uint8Array(memory.buffer); // the view, taken too early
const out = { pagesBefore: memory.buffer.byteLength / 65536, earlyLengthBefore: early.length };
const ptr = alloc(data.length);
Object.assign(out, { ptr, pagesAfter: memory.buffer.byteLength / 65536,
                     earlyLengthAfter: early.length });
try {
  early.set(data, ptr);
  out.earlySet = "no error";
} catch (e) {
  out.earlySet = `${e.constructor.name}: ${e.message}`;
}
early[ptr] = 42; // an element store on a detached view is silently dropped
out.byteAfterEarlyStore = new Uint8Array(memory.buffer)[ptr];

const view = new Uint8Array(memory.buffer, ptr, data.length); // after alloc: the fix
view.set(data);
out.byteAfterFreshSet = new Uint8Array(memory.buffer)[ptr];
console.log(JSON.stringify(out));
