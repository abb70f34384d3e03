"""The wasm peers in Node: one `hosts/node/peers.mjs` process per engine, driven in turns.

Each process loads its engine once, runs it once on the bench's tensor (the output comes
back for the max-abs-diff check), then answers "run a turn" requests: one untimed call, then
`block` timed ones, with the CPU time all its threads used over the timed calls. The bench
asks the engines for their turns one after another, as it does with the in-process ones.

The npm packages are pinned in `hosts/node/package.json` + `package-lock.json`; `wasi-lab
setup` runs `npm ci` there when Node and npm exist. Whatever is missing is a skip with the
reason, never a fake number.
"""

from __future__ import annotations

import base64
import json
import queue
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from wasi_lab.paths import REPO_ROOT

NODE_DIR = REPO_ROOT / "hosts" / "node"
RUNNER = NODE_DIR / "peers.mjs"
#: Node's own WASI and the engines' ES modules need Node 20.
MIN_NODE_MAJOR = 20
START_TIMEOUT_S = 180.0
TURN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class WasmPeer:
    """One engine at one thread count, as `wasi-lab bench --wasm-peers` lists it."""

    key: str
    runner: str  # peers.mjs --engine
    engine: str  # the name in the JSON
    threads: int
    label: str
    packages: tuple[str, ...]


ORT_PACKAGES = ("onnxruntime-web",)
TFJS_PACKAGES = (
    "@tensorflow/tfjs-core",
    "@tensorflow/tfjs-converter",
    "@tensorflow/tfjs-backend-wasm",
)
WASM_PEERS: tuple[WasmPeer, ...] = (
    WasmPeer("guest_node", "guest", "guest-node", 1, "guest (wasm, Node node:wasi)", ()),
    WasmPeer("ort_web_1t", "ort", "onnxruntime-web", 1, "ORT-Web wasm, 1 thread", ORT_PACKAGES),
    WasmPeer("ort_web_2t", "ort", "onnxruntime-web", 2, "ORT-Web wasm, 2 threads", ORT_PACKAGES),
    WasmPeer("tfjs_wasm_1t", "tfjs", "tfjs-wasm", 1, "TF.js wasm, 1 thread", TFJS_PACKAGES),
    WasmPeer("tfjs_wasm_2t", "tfjs", "tfjs-wasm", 2, "TF.js wasm, 2 threads", TFJS_PACKAGES),
)


class NodePeerError(RuntimeError):
    """A Node engine could not start or answer; the message says why (a skip reason)."""


def node_version(node: str | None = None) -> tuple[int, ...] | None:
    """Node's version as numbers, or None when there is no usable `node`."""
    node = node or shutil.which("node")
    if not node:
        return None
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip().lstrip("v")
    try:
        return tuple(int(p) for p in text.split(".")[:3])
    except ValueError:
        return None


def missing_reason(peer: WasmPeer, node_dir: Path = NODE_DIR) -> str | None:
    """Why `peer` cannot run here (no Node, an old one, packages not installed), or None."""
    version = node_version()
    if version is None:
        return "no `node` on PATH (Node 20 or newer runs the wasm peers)"
    if version[0] < MIN_NODE_MAJOR:
        return f"node {'.'.join(map(str, version))} is older than {MIN_NODE_MAJOR}"
    absent = [
        p for p in peer.packages if not (node_dir / "node_modules" / p / "package.json").exists()
    ]
    if absent:
        how = (
            "run `wasi-lab setup` (it runs `npm ci` in hosts/node)"
            if shutil.which("npm")
            else "npm is not installed, so setup cannot install them"
        )
        return f"npm package{'s' if len(absent) > 1 else ''} {', '.join(absent)} missing: {how}"
    return None


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


class NodeEngine:
    """One running `peers.mjs` process with its engine loaded; `turn()` times one turn."""

    def __init__(
        self,
        peer: WasmPeer,
        model: Path,
        tensor_file: Path,
        shape: tuple[int, ...],
        output_name: str = "",
        start_timeout: float = START_TIMEOUT_S,
        wasm: Path | None = None,
    ) -> None:
        self.peer = peer
        argv = [
            shutil.which("node") or "node",
            "--no-warnings",
            str(RUNNER),
            "--engine",
            peer.runner,
            "--threads",
            str(peer.threads),
            "--model",
            str(model),
            "--tensor",
            str(tensor_file),
            "--shape",
            ",".join(map(str, shape)),
        ]
        if output_name:
            argv += ["--output-name", output_name]
        if wasm is not None:
            argv += ["--wasm", str(wasm)]
        self._stderr = tensor_file.with_name(f"{peer.key}.stderr")
        self._err = self._stderr.open("w")
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=NODE_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._err,
                text=True,
            )
        except OSError as exc:
            self._err.close()
            raise NodePeerError(f"cannot start node: {exc}") from exc
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=_pump, args=(self.proc.stdout, self._lines), daemon=True).start()
        try:
            hello = self._read(start_timeout, "start")
        except NodePeerError:
            self.close()
            raise
        if not hello.get("ready"):
            self.close()
            raise NodePeerError(hello.get("error", "the engine did not start"))
        self.detail: str = hello.get("detail", "")
        self.output = np.frombuffer(base64.b64decode(hello["output_b64"]), "<f4").copy()

    def _read(self, timeout: float, what: str) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise NodePeerError(
                f"{self.peer.key}: no answer to {what} within {timeout:.0f} s"
            ) from None
        if line is None:
            self.proc.wait(timeout=10)
            tail = self._stderr.read_text(errors="replace").strip().splitlines()[-3:]
            raise NodePeerError(
                f"node exited with code {self.proc.returncode} during {what}"
                + (f": {' | '.join(tail)}" if tail else "")
            )
        try:
            return json.loads(line)
        except ValueError as exc:
            raise NodePeerError(f"{self.peer.key}: not JSON: {line[:200]!r}") from exc

    def turn(self, block: int, warm: int = 1) -> tuple[list[float], float, float]:
        """`warm` untimed calls, then `block` timed: (times in ms, CPU ms, wall ms)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"warm": warm, "block": block}) + "\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise NodePeerError(f"{self.peer.key}: node is gone ({exc})") from exc
        ans = self._read(TURN_TIMEOUT_S, "a turn")
        return [float(t) for t in ans["times_ms"]], float(ans["cpu_ms"]), float(ans["wall_ms"])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._err.close()
