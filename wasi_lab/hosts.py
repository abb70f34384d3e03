"""One .wasm, several hosts: Node's own WASI, wasmtime-py, and the command-style guest.

The article ran its module twice: from Node (`node:wasi`, writing model and image into linear
memory from JavaScript) and from wasmtime (first as a command with `--dir=.`, then through the
embedding API). This module does the same from Python so a notebook can put the answers side
by side:

- `run_node` runs hosts/node/classify.mjs, the article's Node host with its two bugs fixed,
  in a subprocess and returns its JSON;
- `run_command_guest` runs the command-style guest (`_start`, reads files) under wasmtime-py,
  with or without a preopened directory: WASI's capability model in one switch;
- `wasmtime_timings` measures compile (cold and cached), instantiate (InstancePre), write,
  decode and infer, the breakdown the article could only guess at.

Node is optional: a notebook cell that needs it runs under `skip_without_node()`, which turns a
missing Node into the one line `NODE_MISSING` and lets Run All go on.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import wasmtime

from wasi_lab.images import SAMPLES, sample_source
from wasi_lab.models.labels import labels_for
from wasi_lab.models.registry import ModelSpec, ensure_model, get_model
from wasi_lab.paths import IMAGES_DIR, NODE_HOST_DIR, PREBUILT_COMMAND, default_module

#: The Node host script (ES module; needs Node 20+ for `node:wasi` with `version`).
NODE_HOST = NODE_HOST_DIR / "classify.mjs"
#: Exit code of the Node host when the guest refused the call (e.g. the replayed bug).
NODE_GUEST_REFUSED = 3


class HostError(RuntimeError):
    """A host could not run the guest at all (not: the guest refused an input)."""


class NodeNotFoundError(HostError):
    """No usable `node` binary."""


#: What a notebook cell prints instead of its Node output when there is no Node 20+.
NODE_MISSING = "Node ≥ 20 not found: the Node columns are skipped; install nodejs to see them"


@contextlib.contextmanager
def skip_without_node(message: str = NODE_MISSING) -> Iterator[None]:
    """Run a block that needs Node; without Node print `message` (one line) and go on.

    Only a missing or too old Node is swallowed: a Node host that runs and fails is a real
    error and still raises. Whatever the block would have assigned stays unassigned, so
    later cells must not depend on it.
    """
    try:
        yield
    except NodeNotFoundError:
        print(message)


# --------------------------------------------------------------------------- helpers


def grace_hopper() -> Path:
    """The article's test image: images/grace_hopper.jpg, or matplotlib's own copy."""
    local = IMAGES_DIR / "grace_hopper.jpg"
    if local.is_file():
        return local
    return sample_source(next(s for s in SAMPLES if s.file == "grace_hopper.jpg"))


def find_node() -> Path:
    """The `node` binary (Node 20+), or NodeNotFoundError saying how to get one."""
    found = os.environ.get("WASI_LAB_NODE") or shutil.which("node")
    if not found:
        raise NodeNotFoundError(
            "node not found on PATH: install Node.js 20 or newer (e.g. `apt-get install "
            "nodejs`) or set WASI_LAB_NODE=/path/to/node"
        )
    try:
        out = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NodeNotFoundError(f"{found} does not run: {exc}") from None
    version = out.stdout.strip()
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        raise NodeNotFoundError(f"{found} --version said {version!r}") from None
    if major < 20:
        raise NodeNotFoundError(
            f"{found} is Node {version}; node:wasi with version 'preview1' needs Node 20 or newer"
        )
    return Path(found)


def labels_file(kind: int) -> Path:
    """The class names, one per line, for hosts that cannot import Python (Node)."""
    path = Path(tempfile.gettempdir()) / f"wasi-lab-labels-{kind}.txt"
    text = "\n".join(labels_for(kind)) + "\n"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return path


def _model_path(spec: ModelSpec) -> Path:
    if spec.directory is None:
        return ensure_model(spec.name, progress=False)
    return spec.path


def _mode_name(mode: str, spec: ModelSpec) -> str:
    name = spec.preprocess if mode == "model" else mode
    if name not in ("article", "efficientnet", "inception"):
        raise ValueError(
            f"unknown mode {mode!r}: use 'model', 'article', 'efficientnet' or 'inception'"
        )
    return name


# --------------------------------------------------------------------------- Node


def run_node(
    image: Path | str | None = None,
    model: str | Path = "efficientnet-lite0",
    mode: str = "model",
    *,
    entry: str = "tensor",
    top: int = 5,
    replay_article_bug: bool = False,
    wasm: Path | str | None = None,
    repeat: int = 1,
    timeout: float = 300.0,
) -> dict:
    """Classify `image` with the guest under Node's WASI; returns the host's JSON.

    `entry` picks the guest path: "tensor" (load the model once, decode, infer_tensor),
    "classify" (the one-call export) or "article" (`infer_from_ptrs`, as in the article).
    `repeat` > 1 runs the forward pass again on the same tensor ("tensor" entry) and
    reports every run in `timings_ms["infer_runs"]`: V8 optimises while it runs.
    `replay_article_bug=True` passes the model's length as the image's, like the article's
    `getPrediction`; the guest refuses it and the result has `ok: False` and an `error`
    (code, name, the guest's message). Other failures raise HostError with Node's stderr.
    """
    node = find_node()
    spec = get_model(str(model))
    image = Path(image) if image is not None else grace_hopper()
    cmd = [
        str(node),
        "--no-warnings",
        str(NODE_HOST),
        "--wasm",
        str(Path(wasm) if wasm else default_module()),
        "--model",
        str(_model_path(spec)),
        "--output-name",
        spec.output,
        "--image",
        str(image),
        "--preprocess",
        _mode_name(mode, spec),
        "--labels",
        str(labels_file(spec.labels)),
        "--entry",
        entry,
        "--top",
        str(top),
        "--repeat",
        str(repeat),
    ]
    if replay_article_bug:
        cmd.append("--replay-article-bug")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise HostError(f"the Node host did not finish within {timeout:.0f} s") from None
    wall = (time.perf_counter() - start) * 1000
    if proc.returncode not in (0, NODE_GUEST_REFUSED):
        raise HostError(
            f"the Node host failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise HostError(
            f"the Node host printed no JSON: {proc.stdout[-500:]!r} {proc.stderr[-1000:]!r}"
        ) from None
    result["wall_ms"] = round(wall, 3)
    result["exit_code"] = proc.returncode
    return result


# --------------------------------------------------------------------------- command guest


@dataclass
class CommandRun:
    """One run of the command-style guest: what it printed and how it exited."""

    argv: list[str]
    preopened: str | None
    exit_code: int
    stdout: str
    stderr: str
    ms: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def result(self) -> tuple[float, int] | None:
        """The guest's `result: Some((prob, class))` line, as the article printed it."""
        m = re.search(r"result: Some\(\(([-0-9.eE]+), (\d+)\)\)", self.stdout)
        return (float(m.group(1)), int(m.group(2))) if m else None

    def label(self, kind: int = 1000) -> str | None:
        """The best class's name: `class` is 1-based for 1000 labels, as in the article."""
        if self.result is None:
            return None
        cls = self.result[1]
        return labels_for(kind)[cls - 1 if kind == 1000 else cls]

    def to_dict(self) -> dict:
        return asdict(self)


def run_command_guest(
    model: str | Path = "efficientnet-lite0",
    image: Path | str | None = None,
    preopen: bool = True,
    *,
    mode: str = "model",
    top: int = 5,
    wasm: Path | str | None = None,
) -> CommandRun:
    """Run wasi-lab-classify.wasm like `wasmtime run --dir=. ... --model M --image I`.

    With `preopen=True` the folder holding the model and the image is granted to the guest
    as "."; with `preopen=False` nothing is, and WASI gives the guest no way to open a file:
    it exits with code 2 and a message telling you to pass --dir. Files are staged as hard
    links (or copies) in a temporary folder, so the grant is exactly those two files.
    """
    spec = get_model(str(model))
    model_path = _model_path(spec)
    image = Path(image) if image is not None else grace_hopper()
    wasm = Path(wasm) if wasm else PREBUILT_COMMAND
    if not wasm.exists():
        raise HostError(f"{wasm} not found: run `wasi-lab build` (or `make setup`)")
    argv = [
        "wasi-lab-classify",
        "--model",
        model_path.name,
        "--image",
        image.name,
        "--mode",
        _mode_name(mode, spec),
        "--top",
        str(top),
    ]
    from wasi_lab.runtime import get_engine, instantiate_with_wasi

    engine = get_engine()
    module = _command_module(engine, wasm)
    with tempfile.TemporaryDirectory(prefix="wasi-lab-cmd-") as tmp:
        tmpdir = Path(tmp)
        grant = tmpdir / "granted"
        grant.mkdir()
        for src in (model_path, image):
            _stage(src, grant / src.name)
        out, err = tmpdir / "stdout", tmpdir / "stderr"
        wasi = wasmtime.WasiConfig()
        wasi.argv = argv
        wasi.stdout_file = str(out)
        wasi.stderr_file = str(err)
        if preopen:
            wasi.preopen_dir(str(grant), ".")
        start = time.perf_counter()
        code = 0
        try:
            store, instance = instantiate_with_wasi(engine, module, wasi)
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as exc:
            code = exc.code
        except wasmtime.Trap as exc:
            code = -1
            err.write_text((err.read_text() if err.exists() else "") + f"\ntrap: {exc}")
        ms = (time.perf_counter() - start) * 1000
        stdout = out.read_text(encoding="utf-8", errors="replace") if out.exists() else ""
        stderr = err.read_text(encoding="utf-8", errors="replace") if err.exists() else ""
    return CommandRun(
        argv=argv,
        preopened="." if preopen else None,
        exit_code=code,
        stdout=stdout,
        stderr=stderr,
        ms=round(ms, 3),
    )


_COMMAND_MODULES: dict[tuple, wasmtime.Module] = {}


def _command_module(engine: wasmtime.Engine, wasm: Path) -> wasmtime.Module:
    st = wasm.stat()
    key = (str(wasm.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _COMMAND_MODULES:
        _COMMAND_MODULES[key] = wasmtime.Module.from_file(engine, str(wasm))
    return _COMMAND_MODULES[key]


def _stage(src: Path, dst: Path) -> None:
    """Hard-link when possible (no copy of a 20 MB model), copy otherwise.

    The link is made to the file itself: linking a symlink (a models/ folder of symlinks
    into a shared cache) would put a symlink pointing outside the granted folder in it,
    which WASI refuses to follow (EPERM), and the guest could not read its model.
    """
    src = src.resolve()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


# --------------------------------------------------------------------------- timings


@dataclass
class HostTimings:
    """Where the time goes in wasmtime-py, in milliseconds (medians over `repeat` runs).

    Two kinds of request: `fresh_*` on a brand-new instance right after loading the model
    (what the article's server paid every time: new memory pages, first touches), and
    `write_ms` / `decode_ms` / `infer_ms` on an instance that has already served a request
    (what the kit's long-lived Classifier pays).
    """

    model: str
    image: str
    repeat: int
    compile_cold_ms: float
    compile_cached_ms: float
    instantiate_ms: float
    load_model_ms: float
    fresh_write_ms: float
    fresh_decode_ms: float
    fresh_infer_ms: float
    write_ms: float
    decode_ms: float
    infer_ms: float
    samples: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def article_style_request_ms(self) -> float:
        """One request as the article served it: new instance, load the model, classify."""
        return (
            self.instantiate_ms
            + self.load_model_ms
            + self.fresh_write_ms
            + self.fresh_decode_ms
            + self.fresh_infer_ms
        )

    @property
    def kit_request_ms(self) -> float:
        """One request on a warm instance with the model already parsed."""
        return self.write_ms + self.decode_ms + self.infer_ms


def wasmtime_timings(
    model: str | Path = "efficientnet-lite0",
    image: Path | str | None = None,
    repeat: int = 3,
    wasm: Path | str | None = None,
    progress: bool = False,
) -> HostTimings:
    """Measure compile (Cranelift, no cache), compile (from the .cwasm cache), instantiate
    (InstancePre: WASI already linked), model load and a first request on a fresh instance,
    then write, decode and infer on a warm one."""
    from tqdm.auto import tqdm

    from wasi_lab.predict import Classifier
    from wasi_lab.runtime import Guest, compile_module

    image = Path(image) if image is not None else grace_hopper()
    wasm = Path(wasm) if wasm else default_module()
    keys = (
        "compile_cold",
        "compile_cached",
        "instantiate",
        "load_model",
        "fresh_write",
        "fresh_decode",
        "fresh_infer",
        "write",
        "decode",
        "infer",
    )
    samples: dict[str, list[float]] = {k: [] for k in keys}
    compile_module(wasm)  # make sure the cache file exists before timing "cached"
    for _ in tqdm(range(repeat), desc="compile", disable=not progress, leave=False):
        samples["compile_cold"].append(compile_module(wasm, use_cache=False).compile_ms)
        cached = compile_module(wasm, use_cache=True)
        samples["compile_cached"].append(cached.compile_ms)
    clf = Classifier(model, module=cached)
    data = image.read_bytes()
    for _ in tqdm(range(repeat), desc="requests", disable=not progress, leave=False):
        # The article's request: a new instance, the model written and parsed, one image.
        clf.guest = Guest(cached)
        samples["instantiate"].append(clf.guest.instantiate_ms)
        t = time.perf_counter()
        clf.handle = clf._load()
        samples["load_model"].append((time.perf_counter() - t) * 1000)
        _, timing, _ = clf.scores(data)
        for k in ("write", "decode", "infer"):
            samples[f"fresh_{k}"].append(timing[k])
        # The kit's request: the same instance again, model already parsed.
        _, timing, _ = clf.scores(data)
        for k in ("write", "decode", "infer"):
            samples[k].append(timing[k])
    med = {k: round(statistics.median(v), 3) for k, v in samples.items()}
    return HostTimings(
        model=clf.spec.name,
        image=image.name,
        repeat=repeat,
        **{f"{k}_ms": med[k] for k in keys},
        samples={k: [round(x, 3) for x in v] for k, v in samples.items()},
    )


def compare_hosts(
    image: Path | str | None = None,
    model: str = "efficientnet-lite0",
    top: int = 5,
    require_node: bool = True,
) -> dict:
    """The same .wasm and the same image under Node and under wasmtime-py.

    With `require_node=False` a missing Node leaves the "node" entry out and puts
    `NODE_MISSING` under "skipped" (`format_comparison` prints it), instead of raising.
    """
    from wasi_lab.predict import Classifier

    image = Path(image) if image is not None else grace_hopper()
    out: dict = {}
    try:
        node = run_node(image, model, top=top)
        out["node"] = {
            "label": node["label"],
            "index": node["index"],
            "prob": node["prob"],
            "timings_ms": node["timings_ms"],
            "host": node["host"],
        }
    except NodeNotFoundError:
        if require_node:
            raise
        out["skipped"] = NODE_MISSING
    clf = Classifier(model)
    pred = clf.classify(image, top=top)
    out["wasmtime-py"] = {
        "label": pred.label,
        "index": pred.top[0].index,
        "prob": pred.top[0].prob,
        "timings_ms": pred.timings_ms,
        "host": f"wasmtime-py {wasmtime_version()}",
        "from_cache": clf.guest.compiled.from_cache,
    }
    return out


def wasmtime_version() -> str:
    from wasi_lab.runtime import WASMTIME_VERSION

    return WASMTIME_VERSION


def format_comparison(cmp: dict) -> str:
    """`compare_hosts` as a small text table, one column per host (fits 100 characters)."""
    stages = ("compile", "instantiate", "load_model", "write", "decode", "infer")
    hosts_ = [res for name, res in cmp.items() if name != "skipped"]
    width = max([24] + [len(res["host"]) + 2 for res in hosts_])
    lines = [f"{'':<20}" + "".join(f"{res['host']:<{width}}" for res in hosts_)]
    lines.append("-" * len(lines[0].rstrip()))
    lines.append(f"{'label':<20}" + "".join(f"{res['label']:<{width}}" for res in hosts_))
    lines.append(f"{'probability':<20}" + "".join(f"{res['prob']:<{width}.4f}" for res in hosts_))
    for stage in stages:
        cells = "".join(
            (
                f"{res['timings_ms'][stage]:<{width}.1f}"
                if stage in res["timings_ms"]
                else f"{'—':<{width}}"
            )
            for res in hosts_
        )
        lines.append(f"{stage + ' (ms)':<20}{cells}")
    lines = [line.rstrip() for line in lines]
    if "wasmtime-py" in cmp and "from_cache" in cmp["wasmtime-py"]:
        lines.append(
            "wasmtime-py's compile: "
            + (
                "loaded from the kit's .cwasm cache (Cranelift ran in an earlier process)"
                if cmp["wasmtime-py"]["from_cache"]
                else "a cold Cranelift compile (no cache yet: the next process loads it)"
            )
        )
    if "skipped" in cmp:
        lines.append(cmp["skipped"])
    elif "node" in cmp:
        lines.append("")
        lines += compare_sentences(cmp)
    return "\n".join(lines)


def compare_sentences(cmp: dict) -> list[str]:
    """What the two rows of `compare_hosts` show, from their numbers (never assumed)."""
    node, py = cmp["node"], cmp["wasmtime-py"]
    if node["index"] == py["index"]:
        diff = abs(node["prob"] - py["prob"])
        out = [
            f"same class in both hosts ({py['label']}); top-1 probabilities differ by "
            f"{diff:.1e}" + (" (not at all)" if diff == 0 else "")
        ]
    else:
        out = [f"the hosts disagree: Node says {node['label']}, wasmtime-py {py['label']}"]
    ratios = [
        f"{s} {node['timings_ms'][s] / py['timings_ms'][s]:.1f}x"
        for s in ("load_model", "decode", "infer")
        if py["timings_ms"].get(s) and s in node["timings_ms"]
    ]
    if ratios:
        out.append("Node's time / wasmtime-py's, this run: " + ", ".join(ratios))
    return out


# --------------------------------------------------------------------------- JS exercise

#: Runs a learner's `writeGuestMemory` against a real WebAssembly.Memory whose `alloc`
#: grows it, with the three kinds of Buffer a host meets: one from Node's shared pool
#: (byteOffset > 0, `.buffer` is the 8 KiB pool), a large one with its own ArrayBuffer (what
#: the article's files were, so its bug never showed) and a window into the middle of
#: another. Prints one JSON line: per case, ok or the error.
_JS_HARNESS = r"""
const fs = require('node:fs');
const src = fs.readFileSync(0, 'utf8');
const writeGuestMemory = new Function(`${src}\nreturn writeGuestMemory;`)();
const memory = new WebAssembly.Memory({ initial: 1, maximum: 64 });
let top = 1024;
const instance = { exports: { memory, alloc(len) {
  const ptr = top; top += len;
  const need = Math.ceil(top / 65536) - memory.buffer.byteLength / 65536;
  if (need > 0) memory.grow(need);  // detaches every earlier view of memory.buffer
  return ptr;
} } };
const big = Buffer.alloc(200000);
for (let i = 0; i < big.length; i++) big[i] = (i * 7 + 3) & 255;
const cases = [
  ['a 12-byte Buffer from Node\'s shared pool', Buffer.from('hello, guest')],
  ['a 200000-byte Buffer with its own ArrayBuffer', big],
  ['a 500-byte window (subarray) into that Buffer', big.subarray(1000, 1500)],
];
const out = cases.map(([name, bytes]) => {
  const where = `${name} (byteOffset ${bytes.byteOffset}, `
    + `.buffer ${bytes.buffer.byteLength} bytes)`;
  try {
    const ptr = writeGuestMemory(bytes, instance);
    if (typeof ptr !== 'number') return { name: where, error: `returned ${ptr}, not the pointer` };
    const got = Buffer.from(memory.buffer, ptr, bytes.byteLength);
    return got.equals(bytes) ? { name: where, ok: true }
      : { name: where, error: 'the guest memory at ptr does not hold these bytes' };
  } catch (e) {
    return { name: where, error: String(e) };
  }
});
process.stdout.write(JSON.stringify(out) + '\n');
"""

_ARTICLE_COPY = re.compile(r"new\s+Uint8Array\s*\(\s*bytes\.buffer\s*\)")


def try_write_guest_memory_js(source: str, timeout: float = 20.0) -> list[dict]:
    """Run a JavaScript `function writeGuestMemory(bytes, instance)` in Node on three Buffers.

    Returns one dict per case (`name`, and `ok: True` or `error`). Raises NodeNotFoundError
    without Node, HostError when the source does not even define the function.
    """
    node = find_node()
    try:
        proc = subprocess.run(
            [str(node), "--no-warnings", "-e", _JS_HARNESS],
            input=source,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise HostError(
            f"it did not return within {timeout:.0f} s (a loop that never ends?)"
        ) from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        why = next(
            (x for x in lines if re.match(r"\w*Error\b", x)),
            lines[-1] if lines else f"exit code {proc.returncode}",
        )
        raise HostError(f"Node could not run it: {why}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_write_guest_memory_js(source: str) -> str | None:
    """None when `source`'s writeGuestMemory copies exactly the Buffer's bytes, else why not.

    Runs it in Node when there is one (`try_write_guest_memory_js`). Without Node it reads
    the text instead: the article's `new Uint8Array(bytes.buffer)` is wrong, and a copy of
    the window (`bytes.byteOffset`, or `set(bytes)` itself) is what fixes it.
    """
    if not isinstance(source, str) or "writeGuestMemory" not in source:
        return "expected the JavaScript text of function writeGuestMemory(bytes, instance)"
    try:
        cases = try_write_guest_memory_js(source)
    except NodeNotFoundError:
        if _ARTICLE_COPY.search(source):
            return (
                "(read, Node not found) it still copies new Uint8Array(bytes.buffer): the "
                "whole backing ArrayBuffer, not the Buffer's window"
            )
        if "byteOffset" in source or re.search(r"\.set\(\s*bytes\s*\)", source):
            return None
        return (
            "(read, Node not found) no copy of the Buffer's window found: use "
            "bytes.byteOffset and bytes.byteLength"
        )
    except HostError as exc:
        return str(exc)
    bad = [c for c in cases if not c.get("ok")]
    if not bad:
        return None
    return "; ".join(f"{c['name']}: {c['error']}" for c in bad)
