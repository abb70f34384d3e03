"""The guest in a browser tab: the JavaScript host (`host.js`) and a page that imports it.

`host.js` is one ES module used three ways: the notebook widget (`wasi_lab.browser_host`),
`wasi-lab hosts check` (headless Chromium, `wasi_lab.browser.chromium`) and the tests. It has
its own WASI shim for the guest's six imports, so nothing is fetched at run time.
"""

from __future__ import annotations

from pathlib import Path

#: The ES module: WASI shim, guest driver, page map and the anywidget view.
HOST_JS = Path(__file__).with_name("host.js")
#: A blank page that imports host.js as `window.wasiLabHost` (for Chromium runs).
HARNESS_HTML = Path(__file__).with_name("harness.html")
