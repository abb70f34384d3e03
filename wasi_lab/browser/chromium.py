"""Run the guest in headless Chromium: the browser host of `wasi-lab hosts check`.

A loopback HTTP server (127.0.0.1, a free port) serves `harness.html`, `host.js`, the guest,
the model and the image; Playwright drives Debian's `/usr/bin/chromium` (never a downloaded
browser), the page fetches the bytes from that server and hands them to `host.js`'s
`classifyOnce`, the same code the notebook widget runs. The raw output floats come back as
bytes, so the caller can hash and compare them with wasmtime's and Node's.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from wasi_lab.browser import HARNESS_HTML, HOST_JS
from wasi_lab.hosts import HostError

CHROMIUM = Path("/usr/bin/chromium")
#: No sandbox (containers, root), no GPU, and nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
_TYPES = {
    ".js": "text/javascript",
    ".html": "text/html; charset=utf-8",
    ".wasm": "application/wasm",
}


class ChromiumNotFoundError(HostError):
    """No Chromium binary or no Playwright: the browser host cannot run here."""


def chromium_missing() -> str | None:
    """Why the Chromium host cannot run on this machine, or None when it can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent (apt-get install chromium; `make test` installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return (
            "Python Playwright is not installed (pip install playwright; never needs "
            "`playwright install`: the kit uses Debian's Chromium)"
        )
    return None


class _Files:
    """What the loopback server serves: path -> bytes or a file, replaceable between runs."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes | Path] = {}
        self.lock = threading.Lock()

    def get(self, path: str) -> tuple[bytes, str] | None:
        """(body, content type) for a route; the type follows the served file's suffix."""
        with self.lock:
            src = self.routes.get(path)
        if src is None:
            return None
        suffix = (src if isinstance(src, Path) else Path(path)).suffix
        body = src.read_bytes() if isinstance(src, Path) else src
        return body, _TYPES.get(suffix, "application/octet-stream")


def _handler(files: _Files) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's spelling)
            path = self.path.split("?", 1)[0]
            found = files.get(path)
            if found is None:
                self.send_error(404)
                return
            body, ctype = found
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # keep the terminal quiet
            pass

    return Handler


#: The page-side call: fetch the bytes from the loopback server, run host.js, return data.
_CLASSIFY_JS = """
async ({ top, mode, outputName }) => {
  const get = async (p) => {
    const r = await fetch(p);
    if (!r.ok) throw new Error(`${p}: HTTP ${r.status}`);
    return new Uint8Array(await r.arrayBuffer());
  };
  const [wasm, model, image] = await Promise.all(
    [get('/guest.wasm'), get('/model.pb'), get('/image')]);
  const r = await window.wasiLabHost.classifyOnce({ wasm, model, outputName, image, mode, top });
  return { ...r, raw: Array.from(r.raw),
           stages: r.stages.map((s) => ({ stage: s.stage, regions: s.regions })) };
}
"""


class ChromiumHost:
    """Headless Chromium with the harness page open; `classify` runs one image in it.

    Use as a context manager: it starts the loopback server, Playwright and the browser,
    and stops all three on exit, whatever happened.
    """

    def __init__(self, wasm: Path, model: Path, timeout_s: float = 180.0):
        reason = chromium_missing()
        if reason:
            raise ChromiumNotFoundError(reason)
        self.timeout_ms = timeout_s * 1000
        self.files = _Files()
        self.files.routes.update(
            {
                "/": HARNESS_HTML,
                "/index.html": HARNESS_HTML,
                "/host.js": HOST_JS,
                "/guest.wasm": Path(wasm),
                "/model.pb": Path(model),
            }
        )
        self._stack: list[Callable[[], None]] = []
        self.page = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def __enter__(self) -> ChromiumHost:
        try:
            self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.files))
            threading.Thread(target=self.server.serve_forever, daemon=True).start()
            self._stack.append(self.server.server_close)
            self._stack.append(self.server.shutdown)
            from playwright.sync_api import sync_playwright

            pw = sync_playwright().start()
            self._stack.append(pw.stop)
            self.browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            self._stack.append(self.browser.close)
            self.page = self.new_page()
            self.version = self.browser.version
        except Exception as exc:
            self.close()
            if isinstance(exc, HostError):
                raise
            raise HostError(f"headless Chromium did not start: {exc}") from exc
        return self

    def new_page(self):
        """A fresh tab on the harness page, with host.js imported as `window.wasiLabHost`."""
        page = self.browser.new_page()
        page.set_default_timeout(self.timeout_ms)
        page.goto(self.url)
        page.wait_for_function("() => window.wasiLabHost !== undefined")
        return page

    def close(self) -> None:
        while self._stack:
            try:
                self._stack.pop()()
            except Exception:  # noqa: BLE001 (tearing down: keep closing the rest)
                pass

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def classify(self, image: bytes, output_name: str, mode: int, top: int = 5) -> dict:
        """One image through host.js's classifyOnce in a fresh tab (cold compile, like a
        learner's first visit). `raw` in the answer is the output floats' bytes."""
        from playwright.sync_api import Error as PlaywrightError

        with self.files.lock:
            self.files.routes["/image"] = bytes(image)
        page = self.new_page()
        try:
            result = page.evaluate(
                _CLASSIFY_JS, {"top": top, "mode": mode, "outputName": output_name}
            )
        except PlaywrightError as exc:
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), str(exc))
            raise HostError(f"the guest failed in Chromium: {first}") from None
        finally:
            page.close()
        result["raw"] = bytes(result["raw"])
        result["browser_version"] = self.version
        return result
