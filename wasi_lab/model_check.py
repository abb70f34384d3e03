"""``wasi-lab models check FILE.pb``: will this frozen graph run in the guest?

The guest answers (its export ``model_report``): it scans the graph, picks the output a
classifier means, lists the ops on the way there with their status (``supported``,
``folded`` into a neighbouring step, ``unsupported``), tries the real load, and reports
the input and output, the weights, the multiply-adds and the memory pages an instance needs.
This module moves the file in, prints the answer as a table (or JSON), and turns a file it
cannot check (a wrong path, a directory, not a GraphDef at all) into one clear line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from wasi_lab.runtime import Guest, GuestError
from wasi_lab.user_errors import os_error_line

#: Formats people pass by mistake, and what to do instead.
_OTHER_FORMATS = {
    ".onnx": "an ONNX model",
    ".tflite": "a TensorFlow Lite model",
    ".h5": "a Keras HDF5 model",
    ".keras": "a Keras model",
}
_CONVERT = "export a frozen GraphDef (tf.compat.v1.graph_util.convert_variables_to_constants)"
PAGE = 65536


class CheckError(ValueError):
    """A file that cannot be checked at all: the message is the one line to print."""


def read_model_file(path: str | Path) -> bytes:
    """The file's bytes, or a CheckError that says what is wrong with the path."""
    p = Path(path)
    if p.is_dir():
        hint = (
            f"a TensorFlow SavedModel directory; {_CONVERT}"
            if (p / "saved_model.pb").exists()
            else "is a directory (pass a .pb file)"
        )
        raise CheckError(f"{p}: {hint}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise CheckError(os_error_line(exc)) from None
    if not data:
        raise CheckError(f"{p}: the file is empty, not a TensorFlow GraphDef")
    return data


def model_report(pb: bytes, guest: Guest | None = None) -> dict[str, Any]:
    """The guest's report on the GraphDef `pb` (see ``engine::report`` in the guest)."""
    if not pb:
        raise CheckError("no bytes: an empty file is not a TensorFlow GraphDef")
    g = guest or Guest()
    if not g.has_export("model_report"):
        raise CheckError(
            "this guest module has no `model_report` export: rebuild it "
            "(wasi-lab build) or use the prebuilt one"
        )
    mp = g.write_bytes(pb)
    try:
        cap = 4096
        while True:
            out = g.alloc(cap)
            try:
                n = g.call("model_report", mp, len(pb), out, cap)
                if n <= cap:
                    return json.loads(g.read_bytes(out, n).decode("utf-8"))
            finally:
                g.dealloc(out, cap)
            cap = n
    finally:
        g.dealloc(mp, len(pb))


def not_a_graph_line(path: str | Path, report: dict[str, Any]) -> str | None:
    """One line for a file that is no GraphDef at all (None when it is one)."""
    error = report.get("error") or ""
    if report.get("nodes") is not None or not error.startswith("not a TensorFlow GraphDef"):
        return None
    what = _OTHER_FORMATS.get(Path(path).suffix.lower())
    if what:
        return f"{path}: {what}, not a TensorFlow GraphDef; {_CONVERT}"
    reason = error.removeprefix("not a TensorFlow GraphDef: ")
    return f"{path}: not a TensorFlow GraphDef (a frozen .pb): {reason}"


def _shape(t: dict[str, Any] | None) -> str:
    if not t:
        return "-"
    shape = t.get("shape")
    return f"{t['name']} {shape if shape is not None else '(shape unknown)'}"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def format_report(path: str | Path, r: dict[str, Any]) -> str:
    """The report as a readable table: verdict, tensors, costs, then every op."""
    lines = [f"{path}: " + ("loads and runs in the guest" if r["loadable"] else "will not load")]
    if r.get("error"):
        lines.append(f"  error   {r['error']}")
    lines.append(f"  input   {_shape(r.get('input'))}")
    lines.append(f"  output  {_shape(r.get('output'))}")
    if r.get("nodes") is not None:
        live = r.get("live_nodes")
        on_path = f", {live} on the output's path" if live is not None else ""
        steps = f", {r['steps']} steps" if r.get("steps") is not None else ""
        lines.append(f"  nodes   {r['nodes']}{on_path}{steps}")
    if r["loadable"]:
        mem = r["memory"]
        lines.append(f"  weights {_mib(r['weight_bytes'])}, {r['macs'] / 1e9:.2f} G multiply-adds")
        lines.append(
            f"  memory  about {r['pages']} pages ({_mib(r['pages'] * PAGE)}) to load and "
            f"run: activations {_mib(mem['activation_bytes'])}, scratch "
            f"{_mib(mem['scratch_bytes'])}"
        )
    ops = sorted(r["ops"], key=lambda o: (o["status"] != "unsupported", -o["count"], o["op"]))
    if ops:
        width = max(len("op"), *(len(o["op"]) for o in ops))
        lines.append(f"  {'op':<{width}}  {'count':>5}  {'status':<11}  example node")
        for o in ops:
            row = f"  {o['op']:<{width}}  {o['count']:>5}  {o['status']:<11}  {o['example']}"
            lines.append(row)
    return "\n".join(lines)


def check_command(args: argparse.Namespace) -> int:
    """0: the model loads; 1: it does not (the report says why); 2: no GraphDef to check."""
    try:
        pb = read_model_file(args.file)
        report = model_report(pb)
    except CheckError as exc:
        print(f"wasi-lab models check: {exc}", file=sys.stderr)
        return 2
    except GuestError as exc:  # e.g. a file too large for the guest's memory
        print(
            f"wasi-lab models check: {args.file}: the guest cannot take it in: {exc}",
            file=sys.stderr,
        )
        return 2
    line = not_a_graph_line(args.file, report)
    if args.json:
        print(json.dumps(report, indent=2))
    elif line:
        print(f"wasi-lab models check: {line}", file=sys.stderr)
    else:
        print(format_report(args.file, report))
    if line:
        return 2
    return 0 if report["loadable"] else 1


def add_check_parser(models_sub: argparse._SubParsersAction) -> None:
    """``wasi-lab models check FILE.pb [--json]`` under ``models``."""
    check = models_sub.add_parser("check", help="will this frozen graph (.pb) run in the guest?")
    check.add_argument("file", help="a TensorFlow frozen GraphDef (.pb)")
    check.add_argument("--json", action="store_true", help="print the guest's report as JSON")
    check.set_defaults(func=check_command)
