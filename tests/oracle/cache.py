"""Frozen graphs on disk, keyed by TensorFlow's version, the builder and the seed.

Building MobileNetV2 or ResNet50 with Keras and freezing it takes seconds to tens of seconds
(and importing TensorFlow several); the guest side of a test takes well under that. So each
graph is built once per TensorFlow/Keras version and builder source, in a child process
(`python -m tests.oracle.build`), and kept with the input tensor and TensorFlow's output on
it under ``test-artifacts/oracle/`` (gitignored). A changed builder, seed or TensorFlow
version is a different key, so a stale graph is never reused. `ORACLE_CACHE` moves the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path

import numpy as np

from tests.oracle.graphs import BUILDERS
from wasi_lab.paths import REPO_ROOT

HERE = Path(__file__).resolve().parent
SEED = 20201
#: Seconds one child process may take: all the op graphs, or one application (ResNet50
#: builds and freezes in about a minute on the project's 2-core machine).
BUILD_TIMEOUT = 900


def cache_root() -> Path:
    return Path(os.environ.get("ORACLE_CACHE", REPO_ROOT / "test-artifacts" / "oracle"))


def tensorflow_missing() -> str | None:
    """Why the oracle cannot run here (one line), or None when TensorFlow is installed."""
    for module in ("tensorflow", "tf_keras"):
        if util.find_spec(module) is None:
            return (
                f"TensorFlow oracle skipped: {module} is not installed (pip install -e '.[oracle]')"
            )
    return None


def versions() -> dict[str, str]:
    """The versions that decide what the builders write (read without importing them)."""
    out = {}
    for dist in ("tensorflow", "keras", "tf_keras"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def cache_key(name: str, seed: int = SEED) -> str:
    """`name-s<seed>-<digest>`: the digest covers the versions and the builders' source."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps({"name": name, "seed": seed, "versions": versions()}, sort_keys=True).encode()
    )
    for source in ("graphs.py", "build.py"):
        digest.update((HERE / source).read_bytes())
    return f"{name}-s{seed}-{digest.hexdigest()[:16]}"


@dataclass(frozen=True)
class Frozen:
    """A frozen graph as TensorFlow wrote it, the tensor fed to it, and TensorFlow's answer."""

    name: str
    graph: bytes
    input: str
    output: str
    x: np.ndarray
    y: np.ndarray
    meta: dict

    @property
    def ops(self) -> dict[str, int]:
        return self.meta["ops"]


def load(name: str, seed: int = SEED) -> Frozen | None:
    """The cached graph, or None when it has not been built for this key."""
    folder = cache_root() / cache_key(name, seed)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        tensors = np.load(folder / "io.npz")
        return Frozen(
            name,
            (folder / "graph.pb").read_bytes(),
            meta["input"],
            meta["output"],
            tensors["x"],
            tensors["y"],
            meta,
        )
    except (OSError, ValueError, KeyError):
        return None


def ensure(names: list[str], seed: int = SEED) -> dict[str, Frozen]:
    """Every graph in `names`, building the missing ones (one child process per mode)."""
    missing = [n for n in names if load(n, seed) is None]
    for mode in sorted({BUILDERS[n].mode for n in missing}):
        batch = [n for n in missing if BUILDERS[n].mode == mode]
        cmd = [
            sys.executable,
            "-m",
            "tests.oracle.build",
            "--mode",
            mode,
            "--seed",
            str(seed),
            "--out",
            str(cache_root()),
            *batch,
        ]
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "KERAS_BACKEND": "tensorflow",
            "CUDA_VISIBLE_DEVICES": "-1",
        }
        done = subprocess.run(
            cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"building {', '.join(batch)} with TensorFlow failed:\n{done.stderr[-4000:]}"
            )
    out = {}
    for n in names:
        frozen = load(n, seed)
        if frozen is None:
            raise RuntimeError(f"{n}: the build finished but left no graph in {cache_root()}")
        out[n] = frozen
    return out


def frozen_or_skip(name: str, seed: int = SEED) -> Frozen:
    """One cached graph for a test, built with TensorFlow when missing: a test that needs an
    oracle graph never depends on another test having built it first. Skips (saying why)
    only where TensorFlow is not installed."""
    import pytest

    got = load(name, seed)
    if got is not None:
        return got
    missing = tensorflow_missing()
    if missing:
        pytest.skip(f"{name} is not in the oracle cache and {missing}")
    return ensure([name], seed)[name]
