"""Notebook 01's build results: recorded once from real cargo builds, stored in the repo.

A cold build of one guest variant takes minutes on a small machine (the record says how many
on ours), far too long for a room's Run All. So notebook 01 shows, by default, what real builds
printed and measured, kept in ``docs/build-results/build-results.json``: cargo's lines, module
sizes, build seconds, the crates each variant compiles, the rayon-demo guest's panic, and a
probe of the ``image`` crate with its default features. One switch in the notebook
(``LIVE_BUILD = True``) builds here instead, and every later cell reads the same shape.

Regenerate the record (cold builds: several minutes) with::

    python -m wasi_lab.buildrecord

tests/test_buildrecord.py compares the stored record with the current ``guest/Cargo.toml``
(``manifest_summary``), the guest's sources (``sources_digest``), the committed
``guest/prebuilt`` module (the release build's sha256) and, when a toolchain is present,
``cargo tree`` (``dependency_crates``), so a record that no longer describes the guest is
caught. Whoever rebuilds ``guest/prebuilt`` records again.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from wasi_lab.paths import GUEST_DIR, KIT_ROOT, PREBUILT_MODULE, REPO_ROOT
from wasi_lab.rayon_lesson import RAYON_FEATURE, format_rayon, panic_text, rayon_demo_outcome

#: Read by notebook 01 (shipped in the wheel too, as kit data); written in a checkout.
RECORD_PATH = KIT_ROOT / "docs" / "build-results" / "build-results.json"
#: The variants notebook 01 compares: name -> (release, features).
VARIANTS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "release": (True, ()),
    "debug": (False, ()),
    f"release-{RAYON_FEATURE}": (True, (RAYON_FEATURE,)),
}
#: cargo's lines worth keeping (the rest is progress noise).
CARGO_PREFIXES = ("Compiling", "Finished", "warning", "error")
PROBE_DIR = GUEST_DIR / "target" / "image-defaults-probe"


class RecordError(RuntimeError):
    """The stored record is missing or unreadable; the message says how to make one."""


# --------------------------------------------------------------------------- the record


@dataclass
class VariantRecord:
    """One cargo build of one variant, as it happened."""

    name: str
    release: bool
    features: list[str]
    seconds: float
    size: int
    compiled: list[str]  # the crates cargo compiled, in its order
    cargo_lines: list[str]  # Compiling ... / Finished ... lines, as cargo printed them
    crates: list[str] = field(default_factory=list)  # `cargo tree`: every crate in the build
    module: str = ""  # where the module landed (relative to the repo)
    sections: dict[str, int] = field(default_factory=dict)  # bytes per kind of section
    sha256: str = ""  # of the module as built (after the post-link passes)

    @property
    def debug_info_bytes(self) -> int:
        """Bytes in DWARF `.debug_*` custom sections (0 when stripped)."""
        return self.sections.get("debug info", 0)

    @property
    def cold(self) -> bool:
        """cargo compiled the dependencies too (a first build), not just the guest."""
        return len(self.compiled) > 1


@dataclass
class BuildRecord:
    """Everything notebook 01 shows about building, from one recording session."""

    recorded: str  # UTC date and time
    source: str  # "stored" (the file), "live" (built in this kernel), or
    #                              "fallback" (a live build was asked for, but no Rust here)
    #                              or "no-rust" (stored, and no Rust here to build with)
    toolchain: str
    target: str
    cpu_count: int | None
    load_average: float | None  # 1-minute load when the builds started (a shared machine)
    manifest: dict
    variants: dict[str, VariantRecord]
    rayon_demo: dict = field(default_factory=dict)
    image_probe: dict = field(default_factory=dict)
    sources: str = ""  # sources_digest() of the guest the variants were built from

    def matches_prebuilt(self, prebuilt: Path = PREBUILT_MODULE) -> bool:
        """The release build here is the committed guest/prebuilt module, byte for byte."""
        release = self.variants.get("release")
        return (
            release is not None
            and Path(prebuilt).is_file()
            and release.sha256 == hashlib.sha256(Path(prebuilt).read_bytes()).hexdigest()
        )

    def prebuilt_line(self, prebuilt: Path = PREBUILT_MODULE) -> str:
        """One line for notebook 01: is this release module the one the course runs?

        A stored record made before guest/prebuilt was rebuilt says so, with both sizes,
        instead of passing its numbers off as those of the module notebook 02 opens.
        """
        release = self.variants.get("release")
        prebuilt = Path(prebuilt)
        if release is None or not prebuilt.is_file():
            return f"(no release build or no {prebuilt.name} to compare)"
        size = prebuilt.stat().st_size
        whose = "This release build" if self.source == "live" else "The record's release module"
        if self.matches_prebuilt(prebuilt):
            return (
                f"{whose} is guest/prebuilt/{prebuilt.name} byte for byte ({size:,} bytes): "
                f"the module notebook 02 opens."
            )
        sizes = f"{release.size:,} vs {size:,} bytes"
        if self.source == "live":
            return (
                f"This release build is not guest/prebuilt/{prebuilt.name} ({sizes}): the "
                f"course, notebook 02 included, still runs the prebuilt module."
            )
        return (
            f"The record predates guest/prebuilt ({sizes}): its sizes are not the module "
            f"notebook 02 opens."
        )

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("source")
        return json.dumps(data, indent=1, ensure_ascii=False) + "\n"

    def seconds(self, name: str) -> float | None:
        v = self.variants.get(name)
        return v.seconds if v is not None else None

    def size(self, name: str) -> int | None:
        v = self.variants.get(name)
        return v.size if v is not None else None

    def extra_crates(
        self, name: str = f"release-{RAYON_FEATURE}", base: str = "release"
    ) -> list[str]:
        """Crates variant `name` has that `base` does not (from `cargo tree`)."""
        if name not in self.variants or base not in self.variants:
            return []
        return sorted(set(self.variants[name].crates) - set(self.variants[base].crates))

    def where(self, short: bool = False) -> str:
        """Where these numbers come from: one line for the notebook, or a chart subtitle."""
        cores = f"{self.cpu_count}-core machine" if self.cpu_count else "machine"
        if self.source == "live":
            return (
                f"built here, {self.recorded}, {cores}"
                if short
                else f"Built here just now ({cores}, {self.toolchain}); the notebook still runs "
                f"the prebuilt modules in guest/prebuilt/, built from the same sources."
            )
        load = f", load {self.load_average:.1f}" if self.load_average is not None else ""
        if short:
            return f"stored record: {self.recorded}, {cores}{load}"
        stored = f"recorded {self.recorded} on a {cores}{load} ({self.toolchain})"
        if self.source == "fallback":
            return (
                f"No wasm-capable Rust here, so nothing was built: stored results, {stored}; "
                f"the notebook runs the prebuilt modules in guest/prebuilt/."
            )
        if self.source == "no-rust":
            return (
                f"Stored results, {stored}; no wasm-capable Rust here, so the notebook runs "
                f"the prebuilt modules in guest/prebuilt/."
            )
        return (
            f"Stored results, {stored}; this notebook runs the prebuilt modules in "
            f"guest/prebuilt/. Set LIVE_BUILD = True to build here."
        )


def load(path: Path = RECORD_PATH) -> BuildRecord:
    """The stored record; RecordError (with the command that makes one) when it is missing."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"{path} not found: run `python -m wasi_lab.buildrecord`") from None
    except ValueError as exc:
        raise RecordError(
            f"{path} is not valid JSON ({exc}): run "
            f"`python -m wasi_lab.buildrecord` to write it again"
        ) from None
    variants = {k: VariantRecord(**v) for k, v in data.pop("variants").items()}
    return BuildRecord(source="stored", variants=variants, **data)


def save(record: BuildRecord, path: Path = RECORD_PATH) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(record.to_json(), encoding="utf-8")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- staleness


def manifest_summary(manifest: Path = GUEST_DIR / "Cargo.toml") -> dict:
    """The parts of guest/Cargo.toml a build record depends on: features and dependencies."""
    data = tomllib.loads(Path(manifest).read_text(encoding="utf-8"))
    return {"features": data.get("features", {}), "dependencies": data.get("dependencies", {})}


def sources_digest(guest: Path = GUEST_DIR) -> str:
    """sha256 over the guest's inputs: Cargo.toml and every file under src/ (names and bytes).

    Cargo.lock is not among them: it is not committed, and every build deletes it and lets
    cargo resolve afresh (`wasi_lab.build`), so the crates a build used are recorded from
    `cargo tree` instead (`VariantRecord.crates`).
    """
    guest = Path(guest)
    files = [guest / "Cargo.toml", *sorted(p for p in (guest / "src").rglob("*") if p.is_file())]
    h = hashlib.sha256()
    for f in files:
        rel = f.relative_to(guest).as_posix().encode()
        data = f.read_bytes()
        h.update(len(rel).to_bytes(8, "little") + rel + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


# --------------------------------------------------------------------------- cargo


def _toolchain():
    from wasi_lab.toolchain import ToolchainError, find_toolchain

    try:
        return find_toolchain(check_network=False)
    except ToolchainError:
        return None


def dependency_crates(
    features: Sequence[str] = (), manifest: Path = GUEST_DIR / "Cargo.toml"
) -> list[str] | None:
    """The crates ("name vX.Y.Z") a build for the wasm target with `features` depends on,
    from `cargo tree` (offline, well under a second); None without a toolchain."""
    tc = _toolchain()
    if tc is None:
        return None
    cmd = [
        str(tc.cargo),
        "tree",
        "--target",
        tc.target,
        *tc.cargo_config_args(),
        "--manifest-path",
        str(manifest),
        "-e",
        "normal",
        "--prefix",
        "none",
    ]
    if features:
        cmd += ["--features", ",".join(features)]
    env = tc.env()
    env["CARGO_TARGET_DIR"] = str(GUEST_DIR / "target" / "cargo-tree")
    out = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=120, cwd=Path(manifest).parent
    )
    if out.returncode != 0:
        return None
    own = tomllib.loads(Path(manifest).read_text())["package"]["name"]
    crates = {" ".join(line.split()[:2]) for line in out.stdout.splitlines() if line.strip()}
    return sorted(c for c in crates if not c.startswith(own + " "))


def scrub(line: str) -> str:
    """cargo names the guest's folder by its absolute path; the record says `<repo>` instead,
    so it holds nothing of the machine it was made on."""
    return line.replace(str(REPO_ROOT), "<repo>")


def _registry_roots() -> list[Path]:
    """Where crate sources live: Debian's registry, then cargo's own download folders."""
    from wasi_lab.toolchain import DEBIAN_REGISTRY

    home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "registry" / "src"
    return [DEBIAN_REGISTRY, *sorted(home.glob("*"))]


def find_crate_file(relative: str) -> Path | None:
    """`relative` ("crate-1.2.3/src/x.rs") in the first crate source folder that has it."""
    for root in _registry_roots():
        if (root / relative).is_file():
            return root / relative
    return None


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return Path(path).name


def build_variant(
    name: str,
    cold: bool = False,
    progress: bool = True,
    expected_crates: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> VariantRecord:
    """Build one variant with cargo and describe it as a VariantRecord.

    `cold=True` deletes the variant's target directory first, so every dependency is compiled
    (what a learner's first build costs). `progress` shows a tqdm bar counting crates; with
    `expected_crates` (from the stored record) it knows the total.
    """
    from tqdm.auto import tqdm

    from wasi_lab.build import build_guest, variant_name

    release, features = VARIANTS[name]
    if cold:
        shutil.rmtree(GUEST_DIR / "target" / variant_name(release, features), ignore_errors=True)
    kept: list[str] = []
    bar = tqdm(
        total=expected_crates,
        desc=f"cargo build {name}",
        unit=" crate",
        disable=not progress,
        leave=True,
    )

    def on_line(line: str) -> None:
        text = scrub(line.strip())
        if text.startswith(CARGO_PREFIXES):
            kept.append(text)
            if echo:
                echo(text)
        if text.startswith("Compiling"):
            bar.update(1)
            bar.set_postfix_str(text.split()[1], refresh=False)

    try:
        res = build_guest(release=release, features=features, progress=False, echo=on_line)
        if not res.compiled:
            bar.set_description_str(f"cargo build {name} (cached: nothing to compile)")
        bar.total = bar.n  # done: a full bar, whatever the estimate was
        bar.refresh()
    finally:
        bar.close()
    return VariantRecord(
        name=name,
        release=release,
        features=list(features),
        seconds=round(res.seconds, 1),
        size=res.size,
        compiled=res.compiled,
        cargo_lines=kept,
        crates=dependency_crates(features) or [],
        module=_relative(res.module),
        sections=section_sizes(res.module),
        sha256=hashlib.sha256(res.module.read_bytes()).hexdigest(),
    )


def section_sizes(module: Path | str) -> dict[str, int]:
    """Bytes per kind of section: code, data, debug info (`.debug_*`), names, the rest."""
    from wasi_lab.inspect import inspect_module

    out = {"code": 0, "data": 0, "debug info": 0, "names": 0, "other": 0}
    for sec in inspect_module(Path(module)).sections:
        custom = sec.custom_name or ""
        key = (
            "debug info"
            if custom.startswith(".debug")
            else "names"
            if custom == "name"
            else sec.name
            if sec.name in ("code", "data")
            else "other"
        )
        out[key] += sec.size
    return out


# --------------------------------------------------------------------------- image probe

PROBE_MANIFEST = """\
[package]
name = "image-defaults-probe"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
# The article's starting point: the image crate with ALL its default features.
image = "0.24"

[workspace]
"""

PROBE_MAIN = """\
// Open and decode a JPEG from a preopened directory, as the article's tract example did.
fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "grace_hopper.jpg".to_string());
    let img = image::open(&path).expect("could not open the image");
    println!("decoded {}x{} with image's default features", img.width(), img.height());
}
"""


def _metadata(tc, manifest: Path) -> dict:
    cmd = [
        str(tc.cargo),
        "metadata",
        "--format-version",
        "1",
        *tc.cargo_config_args(),
        "--filter-platform",
        tc.target,
        "--manifest-path",
        str(manifest),
    ]
    out = subprocess.run(
        cmd,
        env=tc.env(),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=manifest.parent,
        check=True,
    )
    return json.loads(out.stdout)


def image_crate_facts(tc, manifest: Path) -> dict:
    """What the `image` crate in a build enables, and where its JPEG decoder uses rayon."""
    meta = _metadata(tc, manifest)
    pkgs = {p["id"]: p for p in meta["packages"]}
    enabled = {pkgs[n["id"]]["name"]: n["features"] for n in meta["resolve"]["nodes"]}
    image = next(p for p in meta["packages"] if p["name"] == "image")
    jpeg = next((p for p in meta["packages"] if p["name"] == "jpeg-decoder"), None)
    facts = {
        "image_version": image["version"],
        "image_default_features": image["features"].get("default", []),
        "image_features_using_rayon": {
            k: v
            for k, v in image["features"].items()
            if k != "default" and any("rayon" in x for x in v)
        },
        "image_enabled": enabled.get("image", []),
    }
    if jpeg is not None:
        worker = Path(jpeg["manifest_path"]).parent / "src" / "worker" / "mod.rs"
        lines = worker.read_text().splitlines() if worker.exists() else []
        facts.update(
            {
                "jpeg_decoder_version": jpeg["version"],
                "jpeg_decoder_enabled": enabled.get("jpeg-decoder", []),
                "jpeg_worker_file": f"jpeg-decoder-{jpeg['version']}/src/worker/mod.rs",
                "jpeg_worker_cfg": cfg_lines(lines),
            }
        )
    return facts


#: In jpeg-decoder's worker/mod.rs: each `#[cfg(all(` and the 4 lines after it.
_CFG = re.compile(r"#\[cfg\(all\(")
_CFG_CONTEXT = 4


def cfg_lines(lines: list[str]) -> list[str]:
    """The lines that mention a `cfg` (and a few after each), numbered from 1."""
    keep = sorted(
        {
            j
            for i, line in enumerate(lines)
            if _CFG.search(line)
            for j in range(i, min(i + 1 + _CFG_CONTEXT, len(lines)))
        }
    )
    return [f"{j + 1:>3}: {lines[j]}" for j in keep]


def image_probe(cold: bool = True, previous: dict | None = None) -> dict:
    """Build a tiny program with `image = "0.24"` (default features) for the wasm target, run
    it on the article's photo under wasmtime-py, and say whether rayon was compiled and
    whether it panicked. The article's 2020 `image` did; this records what today's does.

    `cold=False` with the `previous` probe reuses its build (the build facts are then the
    previous cold build's) and only runs the module again.
    """
    import wasmtime

    from wasi_lab.hosts import grace_hopper
    from wasi_lab.runtime import get_engine, instantiate_with_wasi

    tc = _toolchain()
    if tc is None:
        return {}
    wasm = PROBE_DIR / "target" / tc.target / "release" / "image-defaults-probe.wasm"
    build_keys = ("manifest", "main", "build_ok", "seconds", "compiled", "rayon_compiled")
    if not cold and previous and wasm.exists() and all(k in previous for k in build_keys):
        result = {k: previous[k] for k in build_keys}
    else:
        shutil.rmtree(PROBE_DIR, ignore_errors=True)
        (PROBE_DIR / "src").mkdir(parents=True)
        (PROBE_DIR / "Cargo.toml").write_text(PROBE_MANIFEST)
        (PROBE_DIR / "src" / "main.rs").write_text(PROBE_MAIN)
        env = tc.env()
        env["CARGO_TARGET_DIR"] = str(PROBE_DIR / "target")
        env["CARGO_TERM_COLOR"] = "never"
        cmd = [
            str(tc.cargo),
            "build",
            "--release",
            "--target",
            tc.target,
            *tc.cargo_config_args(),
            "--manifest-path",
            str(PROBE_DIR / "Cargo.toml"),
        ]
        start = time.perf_counter()
        out = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=1800, cwd=PROBE_DIR
        )
        seconds = time.perf_counter() - start
        compiled = [
            line.split()[1]
            for line in out.stderr.splitlines()
            if line.strip().startswith("Compiling")
        ]
        result = {
            "manifest": PROBE_MANIFEST,
            "main": PROBE_MAIN,
            "build_ok": out.returncode == 0,
            "seconds": round(seconds, 1),
            "compiled": compiled,
            "rayon_compiled": any(c.startswith("rayon") for c in compiled),
        }
        if out.returncode != 0:
            result["build_error"] = out.stderr[-2000:]
            return result
    result.update(image_crate_facts(tc, PROBE_DIR / "Cargo.toml"))
    # resolve(): WASI will not follow a symlink that leads out of the granted directory
    photo = grace_hopper().resolve()
    engine = get_engine()
    with tempfile.TemporaryDirectory(prefix="wasi-lab-probe-") as tmp:
        so, se = Path(tmp) / "out", Path(tmp) / "err"
        wasi = wasmtime.WasiConfig()
        wasi.argv = ["probe", photo.name]
        wasi.preopen_dir(str(photo.parent), ".")
        wasi.stdout_file, wasi.stderr_file = str(so), str(se)
        store, instance = instantiate_with_wasi(
            engine, wasmtime.Module.from_file(engine, str(wasm)), wasi
        )
        exit_code, trap = 0, ""
        try:
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as exc:
            exit_code = exc.code
        except wasmtime.Trap as exc:
            exit_code = -1
            trap = re.sub(r"^\d+:\s*", "", str(exc).strip().splitlines()[-1].strip())
        result.update(
            {
                "exit_code": exit_code,
                "trap": trap,
                "stdout": so.read_text().strip(),
                "panic_message": panic_text(se.read_text()) if trap else "",
            }
        )
    return result


# --------------------------------------------------------------------------- record / live


def record(
    variants: Sequence[str] = tuple(VARIANTS),
    cold: bool = True,
    probe: bool = True,
    progress: bool = True,
) -> BuildRecord:
    """Run the real builds (cold unless told otherwise) and gather a BuildRecord."""
    tc = _toolchain()
    if tc is None:
        from wasi_lab.toolchain import missing_toolchain_advice

        raise RecordError(missing_toolchain_advice())
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    sources = sources_digest()
    built = {name: build_variant(name, cold=cold, progress=progress) for name in variants}
    if sources_digest() != sources:
        raise RecordError("guest/ changed while the builds ran: record again")
    rec = BuildRecord(
        recorded=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        source="live",
        toolchain=tc.version,
        target=tc.target,
        cpu_count=os.cpu_count(),
        load_average=round(load_avg, 1) if load_avg is not None else None,
        manifest=manifest_summary(),
        variants=built,
        sources=sources,
    )
    rayon = built.get(f"release-{RAYON_FEATURE}")
    if rayon is not None:
        rec.rayon_demo = rayon_demo_outcome(REPO_ROOT / rayon.module)
    if probe:
        rec.image_probe = image_probe()
    return rec


def results(live: bool = False, progress: bool = True) -> BuildRecord:
    """What notebook 01 shows: the stored record, or (`live=True`) builds made here now.

    Live builds reuse the variants' target directories (cold the first time, seconds after);
    the rayon demo is run on the fresh module and the image probe is taken from the store.
    Without a toolchain a live request falls back to the record, and `where()` says so.
    """
    stored = load()
    tc = _toolchain()
    if tc is None:  # where() says so, in the one line the notebook prints
        stored.source = "fallback" if live else "no-rust"
        return stored
    if not live:
        return stored
    built = {}
    for name in VARIANTS:
        expected = len(stored.variants[name].compiled) if name in stored.variants else None
        built[name] = build_variant(name, progress=progress, expected_crates=expected)
    rec = BuildRecord(
        recorded=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        source="live",
        toolchain=tc.version,
        target=tc.target,
        cpu_count=os.cpu_count(),
        load_average=None,
        manifest=manifest_summary(),
        variants=built,
        image_probe=stored.image_probe,
        sources=sources_digest(),
    )
    rec.rayon_demo = rayon_demo_outcome(REPO_ROOT / built[f"release-{RAYON_FEATURE}"].module)
    return rec


def format_variant(v: VariantRecord, head: int = 3) -> str:
    """cargo's lines for one build, shortened: the first few, a count, and `Finished`."""
    compiling = [x for x in v.cargo_lines if x.startswith("Compiling")]
    rest = [x for x in v.cargo_lines if not x.startswith("Compiling")]
    lines = compiling[:head]
    if len(compiling) > head:
        lines.append(f"... {len(compiling) - head} more `Compiling` lines")
    lines += rest
    state = "cold: every dependency compiled" if v.cold else "cached: nothing to compile"
    return f"== {v.name} ({state}), {v.seconds:.1f} s\n" + "\n".join(f"   {x}" for x in lines)


def format_probe(probe: dict) -> str:
    """The image-defaults probe in a few lines: features, what was compiled, what happened."""
    if not probe:
        return "(no image-defaults probe in this record)"
    using = ", ".join(f"{k} = {v}" for k, v in probe.get("image_features_using_rayon", {}).items())
    rayon = sorted({c for c in probe.get("compiled", []) if "rayon" in c or "crossbeam" in c})
    lines = [
        f"image {probe.get('image_version')} with its default features "
        f"({len(probe.get('image_default_features', []))} of them), "
        f"jpeg-decoder {probe.get('jpeg_decoder_version')}",
        f"    the default features that pull in rayon: {using or 'none'}",
        f"    jpeg-decoder's enabled features: {probe.get('jpeg_decoder_enabled')}",
        f"    built for the wasm target in {probe.get('seconds')} s; rayon compiled: "
        f"{'yes (' + ', '.join(rayon) + ')' if rayon else 'no'}",
    ]
    if not probe.get("build_ok"):
        lines.append("    the build FAILED: " + probe.get("build_error", "")[-300:])
    elif probe.get("trap"):
        lines.append(
            f"    ran on the article's photo: TRAP ({probe['trap']}); panic: "
            f"{probe.get('panic_message')}"
        )
    else:
        lines.append(
            f"    ran on the article's photo: exit code {probe.get('exit_code')}, "
            f"printed {probe.get('stdout')!r}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Record notebook 01's build results (real, cold cargo builds: several minutes)."
    )
    p.add_argument("--out", type=Path, default=RECORD_PATH)
    p.add_argument(
        "--warm",
        action="store_true",
        help="keep target directories (not cold); with --only-probe: reuse the "
        "probe's earlier build and only run it again",
    )
    p.add_argument("--no-probe", action="store_true", help="skip the image-defaults probe")
    p.add_argument(
        "--only-probe",
        action="store_true",
        help="run the image-defaults probe again and update the stored record",
    )
    p.add_argument(
        "--only-rayon",
        action="store_true",
        help="call the existing rayon-demo build again and update the record",
    )
    p.add_argument(
        "--only-sections",
        action="store_true",
        help="read the section sizes of the recorded modules (still in guest/target, "
        "same size) into the record",
    )
    args = p.parse_args(argv)
    if args.only_probe or args.only_rayon or args.only_sections:
        rec = load(args.out)
        for v in rec.variants.values() if args.only_sections else ():
            path = REPO_ROOT / v.module
            if not path.is_file() or path.stat().st_size != v.size:
                raise RecordError(f"{v.module} is not the recorded build any more: record again")
            v.sections = section_sizes(path)
            print(v.name, v.sections)
        if args.only_rayon:
            rec.rayon_demo = rayon_demo_outcome(
                REPO_ROOT / rec.variants[f"release-{RAYON_FEATURE}"].module
            )
            print(format_rayon(rec.rayon_demo))
        if args.only_probe:
            rec.image_probe = image_probe(cold=not args.warm, previous=rec.image_probe)
            print(format_probe(rec.image_probe))
        print(f"wrote {save(rec, args.out)}")
        return 0
    rec = record(cold=not args.warm, probe=not args.no_probe)
    for v in rec.variants.values():
        print(format_variant(v))
    print(json.dumps({"rayon_demo": rec.rayon_demo}, indent=1))
    print(f"wrote {save(rec, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
