"""`wasi-lab hosts check`: one image through every host present, and do they agree?

The article's promise is one module "both in and outside browser environments". This runs
the same prebuilt .wasm and the same image under wasmtime (Python), Node (node:wasi) and
headless Chromium (the notebook widget's host.js) and compares the raw output floats byte
for byte: the guest is deterministic wasm, so every engine must write the same 4000 bytes.
A host that is absent (no Node, no Chromium) is listed as skipped with why; a host that is
present but fails, or two hosts that disagree, make the command exit non-zero. A teacher
runs it to see that a machine is ready.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from wasi_lab.hosts import HostError, NodeNotFoundError, grace_hopper

#: Every host, in the order they run.
HOSTS = ("wasmtime", "node", "chromium")


@dataclass
class HostRun:
    """One host's answer: the top-k, the raw outputs' digest and where the time went."""

    host: str
    engine: str
    image: str
    top: list[dict]
    raw_sha256: str
    infer_ms: float
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def shown_path(path: Path) -> str:
    """A path as a learner typed it: relative to the repository when inside it."""
    from wasi_lab.paths import REPO_ROOT

    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def raw_sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def compare_raw(a: bytes, b: bytes) -> dict:
    """Byte equality of two raw f32 outputs and, when they differ, the largest gap.

    `identical` is a byte comparison (sha256 of each), not a tolerance: the same wasm on the
    same input is expected to produce the same bits in any engine.
    """
    out = {
        "identical": a == b,
        "sha256": raw_sha256(a),
        "other_sha256": raw_sha256(b),
        "max_abs_diff": 0.0,
    }
    if a != b:
        if len(a) != len(b) or len(a) % 4:
            out["max_abs_diff"] = None
            out["note"] = f"different lengths: {len(a)} and {len(b)} bytes"
        else:
            x = np.frombuffer(a, dtype="<f4").astype(np.float64)
            y = np.frombuffer(b, dtype="<f4").astype(np.float64)
            out["max_abs_diff"] = float(np.max(np.abs(x - y)))
    return out


def _top(probs: np.ndarray, labels: tuple[str, ...], k: int) -> list[dict]:
    order = sorted(range(len(probs)), key=lambda i: (-float(probs[i]), i))[:k]
    return [{"index": i, "label": labels[i], "prob": round(float(probs[i]), 6)} for i in order]


def run_wasmtime(image: Path, model: str, mode: str, top: int) -> tuple[HostRun, bytes]:
    """The kit's own host: wasmtime-py through `Classifier` (compile, instantiate, load,
    then decode + infer_tensor on the image)."""
    from wasi_lab.hosts import wasmtime_version
    from wasi_lab.predict import Classifier

    clf = Classifier(model)
    probs, timing, _ = clf.scores(image.read_bytes(), mode)
    raw = np.ascontiguousarray(probs, dtype="<f4").tobytes()
    setup = clf.setup_ms
    timings = {
        "compile": setup["compile"],
        "instantiate": setup["instantiate"],
        "load_model": setup["load_model"],
        **timing,
    }
    engine = f"wasmtime-py {wasmtime_version()}" + (
        " (compiled module from cache)" if setup.get("compile_from_cache") else ""
    )
    return HostRun(
        "wasmtime",
        engine,
        shown_path(image),
        _top(probs, clf.labels, top),
        raw_sha256(raw),
        round(timing["infer"], 3),
        {k: round(v, 3) for k, v in timings.items()},
    ), raw


def run_node_host(image: Path, model: str, mode: str, top: int) -> tuple[HostRun, None]:
    """Node's own WASI running hosts/node/classify.mjs (it prints the raw outputs' sha256)."""
    from wasi_lab.hosts import run_node

    res = run_node(image, model, mode, top=top)
    if not res.get("ok", False):
        raise HostError(f"the guest refused the image under Node: {res.get('error')}")
    if "raw_sha256" not in res:
        raise HostError("hosts/node/classify.mjs printed no raw_sha256 (an older copy?)")
    t = {k: v for k, v in res["timings_ms"].items() if isinstance(v, int | float)}
    return HostRun(
        "node",
        res["host"],
        shown_path(image),
        [
            {"index": c["index"], "label": c["label"], "prob": round(c["prob"], 6)}
            for c in res["top"]
        ],
        res["raw_sha256"],
        t["infer"],
        t,
    ), None


def run_chromium_host(image: Path, model: str, mode: str, top: int) -> tuple[HostRun, bytes]:
    """Headless Chromium running host.js (the widget's code) on a loopback page."""
    from wasi_lab.browser.chromium import ChromiumHost
    from wasi_lab.hosts import _mode_name, _model_path
    from wasi_lab.models.labels import labels_for
    from wasi_lab.models.registry import get_model
    from wasi_lab.paths import default_module
    from wasi_lab.predict import MODE_IDS

    spec = get_model(model)
    labels = labels_for(spec.labels)
    with ChromiumHost(default_module(), _model_path(spec)) as chromium:
        res = chromium.classify(
            image.read_bytes(), spec.output, MODE_IDS[_mode_name(mode, spec)], top
        )
    raw = res["raw"]
    tops = [
        {"index": c["index"], "label": labels[c["index"]], "prob": round(c["prob"], 6)}
        for c in res["top"]
    ]
    return HostRun(
        "chromium",
        f"Chromium {res['browser_version']} (host.js, own WASI shim)",
        shown_path(image),
        tops,
        raw_sha256(raw),
        res["timings_ms"]["infer"],
        res["timings_ms"],
    ), raw


RUNNERS: dict[str, Callable[[Path, str, str, int], tuple[HostRun, bytes | None]]] = {
    "wasmtime": run_wasmtime,
    "node": run_node_host,
    "chromium": run_chromium_host,
}


def absent_reason(host: str) -> str | None:
    """Why `host` cannot run on this machine (then it is skipped), or None."""
    if host == "node":
        from wasi_lab.hosts import find_node

        try:
            find_node()
        except NodeNotFoundError as exc:
            return str(exc)
    if host == "chromium":
        from wasi_lab.browser.chromium import chromium_missing

        return chromium_missing()
    return None


def summarize(
    image: str, model: str, runs: list[HostRun], skipped: list[dict], failed: list[dict]
) -> dict:
    """The report: every run, and `agree` when at least one host ran, none failed, and all
    wrote the same raw bytes (one sha256)."""
    digests = {r.raw_sha256 for r in runs}
    agree = bool(runs) and not failed and len(digests) == 1
    return {
        "image": image,
        "model": model,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hosts": [r.to_dict() for r in runs],
        "skipped": skipped,
        "failed": failed,
        "agree": agree,
        "distinct_raw_sha256": sorted(digests),
    }


def check_hosts(
    image: Path | str | None = None,
    model: str = "efficientnet-lite0",
    mode: str = "model",
    top: int = 5,
    hosts: tuple[str, ...] = HOSTS,
    image_for: dict[str, Path] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run `image` through each host in `hosts` that is present and compare.

    `image_for` gives one host another image (a teacher's demo of a disagreement, and the
    test that the check can fail)."""
    image = Path(image) if image is not None else grace_hopper()
    if not image.is_file():
        raise FileNotFoundError(f"{image}: not found (pass a JPEG or PNG file)")
    unknown = set(hosts) - set(HOSTS) | set(image_for or {}) - set(HOSTS)
    if unknown:
        raise ValueError(f"unknown host {sorted(unknown)[0]!r}: use {', '.join(HOSTS)}")
    runs: list[HostRun] = []
    skipped: list[dict] = []
    failed: list[dict] = []
    for host in hosts:
        why = absent_reason(host)
        if why:
            skipped.append({"host": host, "reason": why})
            continue
        if progress:
            progress(host)
        src = Path((image_for or {}).get(host, image))
        try:
            run, _ = RUNNERS[host](src, model, mode, top)
        except (HostError, OSError, ValueError, RuntimeError) as exc:
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), repr(exc))
            failed.append({"host": host, "error": first})
            continue
        runs.append(run)
    return summarize(shown_path(image), model, runs, skipped, failed)


def format_report(rep: dict) -> str:
    """The report as text: per host the engine, the top-5, the digest and the times."""
    lines = [f"image {rep['image']}, model {rep['model']}"]
    stages = ("compile", "instantiate", "load_model", "decode", "infer")
    for r in rep["hosts"]:
        t = r["timings_ms"]
        times = ", ".join(f"{s} {t[s]:.1f}" for s in stages if s in t)
        lines.append(f"\n{r['host']}: {r['engine']}")
        if r["image"] != rep["image"]:
            lines.append(f"  image {r['image']} (given with --image-for)")
        lines.append(f"  raw sha256 {r['raw_sha256']}")
        lines.append(f"  ms: {times}")
        for c in r["top"]:
            lines.append(f"    {c['index']:>4}  {c['prob']:.4f}  {c['label']}")
    for s in rep["skipped"]:
        lines.append(f"\n{s['host']}: skipped ({s['reason']})")
    for f in rep["failed"]:
        lines.append(f"\n{f['host']}: FAILED ({f['error']})")
    n = len(rep["hosts"])
    if rep["agree"]:
        lines.append(
            f"\nagree: {n} host{'s' * (n != 1)} wrote the same raw outputs "
            f"(sha256 {rep['distinct_raw_sha256'][0][:16]}…)"
        )
    elif rep["failed"] or not n:
        lines.append("\nNOT READY: a host failed or none ran")
    else:
        lines.append(
            f"\nDISAGREE: {len(rep['distinct_raw_sha256'])} different raw outputs among {n} hosts"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def _host_image(text: str) -> tuple[str, Path]:
    host, sep, path = text.partition("=")
    if not sep or host not in HOSTS or not path:
        raise argparse.ArgumentTypeError(
            f"expected HOST=IMAGE with HOST one of {', '.join(HOSTS)}, not {text!r}"
        )
    return host, Path(path)


def _cmd_hosts_check(args: argparse.Namespace) -> int:
    import sys

    image_for = dict(args.image_for or [])
    for host, path in image_for.items():
        if not path.is_file():
            raise FileNotFoundError(f"--image-for {host}={path}: not found")
    hosts = tuple(args.only) if args.only else HOSTS

    def progress(host: str) -> None:
        if not args.json:
            print(f"running {host} …", file=sys.stderr, flush=True)

    rep = check_hosts(
        args.image,
        model=args.model,
        mode=args.mode,
        hosts=hosts,
        image_for=image_for,
        progress=progress,
    )
    print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    return 0 if rep["agree"] else 1


def add_hosts_parser(sub: argparse._SubParsersAction) -> None:
    """`wasi-lab hosts check [IMAGE] [--json]`."""
    p = sub.add_parser("hosts", help="the same module under wasmtime, Node and Chromium")
    hsub = p.add_subparsers(dest="hosts_command", required=True)
    c = hsub.add_parser(
        "check",
        help="one image through every host present; exit 1 unless all write the same raw outputs",
    )
    c.add_argument("image", nargs="?", help="JPEG or PNG (default: grace_hopper.jpg)")
    c.add_argument("--model", default="efficientnet-lite0")
    c.add_argument(
        "--mode", default="model", choices=["model", "article", "efficientnet", "inception"]
    )
    c.add_argument(
        "--only",
        nargs="+",
        choices=HOSTS,
        metavar="HOST",
        help=f"run only these hosts ({', '.join(HOSTS)})",
    )
    c.add_argument(
        "--image-for",
        type=_host_image,
        action="append",
        metavar="HOST=IMAGE",
        help="give one host another image: watch the check catch a disagreement",
    )
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_cmd_hosts_check)
