"""The guest in headless Chromium, as one more engine of `wasi-lab bench --wasm-peers`.

The tab is `wasi-lab hosts check`'s (`wasi_lab.browser.chromium`: loopback server, Debian's
Chromium, `host.js`); here the guest is compiled and the model loaded once, and each turn
writes the bench's tensor into linear memory and calls `infer_tensor`, as the other hosts
do. The page cannot see its process's CPU time, so this engine has no CPU-per-wall figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wasi_lab.browser.chromium import ChromiumHost, chromium_missing
from wasi_lab.hosts import HostError

_SETUP_JS = """
async ({ outputName }) => {
  const get = async (p) => new Uint8Array(await (await fetch(p)).arrayBuffer());
  const [wasm, model, tensor] = await Promise.all(
    [get('/guest.wasm'), get('/model.pb'), get('/tensor')]);
  const { module } = await window.wasiLabHost.BrowserGuest.compile(wasm);
  const g = await window.wasiLabHost.BrowserGuest.create(module);
  g.loadModel(model, outputName);
  const run = () => {
    const ptr = g.write(tensor, 'tensor');
    const out = g.alloc(4 * g.outputLen, 'output');
    try {
      g.check('infer_tensor', g.ex.infer_tensor(g.handle, ptr, out));
      return g.readBytes(out, 4 * g.outputLen);
    } finally {
      g.dealloc(ptr, tensor.byteLength);
      g.dealloc(out, 4 * g.outputLen);
    }
  };
  window.benchRun = run;
  g.blocks = [];  // no page map here: do not keep a record of every block
  return { output: Array.from(run()), agent: navigator.userAgent };
}
"""

_TURN_JS = """
({ warm, block }) => {
  for (let i = 0; i < warm; i++) window.benchRun();
  const times = [];
  for (let i = 0; i < block; i++) {
    const s = performance.now();
    window.benchRun();
    times.push(performance.now() - s);
  }
  return times;
}
"""


class BrowserEngine:
    """The guest in one headless Chromium tab; `turn()` as `NodeEngine.turn`."""

    def __init__(self, wasm: Path, model: Path, tensor: np.ndarray, output_name: str) -> None:
        reason = chromium_missing()
        if reason:
            raise HostError(reason)
        self.host = ChromiumHost(wasm, model)
        self.host.files.routes["/tensor"] = np.ascontiguousarray(tensor, "<f4").tobytes()
        self.host.__enter__()
        try:
            ans = self.host.page.evaluate(_SETUP_JS, {"outputName": output_name})
        except Exception as exc:
            self.close()
            raise HostError(f"the guest did not start in Chromium: {exc}") from exc
        self.output = np.frombuffer(bytes(ans["output"]), "<f4").copy()
        self.detail = f"guest, Chromium {self.host.version} headless, 1 thread"

    def turn(self, block: int, warm: int = 1) -> tuple[list[float], float, float]:
        times = [
            float(t) for t in self.host.page.evaluate(_TURN_JS, {"warm": warm, "block": block})
        ]
        # No CPU clock in the page: report no CPU time (the row's cpu_per_wall stays empty).
        return times, float("nan"), sum(times)

    def close(self) -> None:
        self.host.close()
