"""The stored build record notebook 01 shows: complete, honest, and still about this guest."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from wasi_lab import buildrecord, rayon_lesson
from wasi_lab.build import built_module
from wasi_lab.paths import GUEST_DIR, PREBUILT_MODULE
from wasi_lab.views.build_views import jpeg_worker_listing

REGENERATE = "regenerate it with `python -m wasi_lab.buildrecord` (cold builds, minutes)"


def stale_reasons(record: buildrecord.BuildRecord, check_crates: bool = True) -> list[str]:
    """Why `record` no longer describes the guest (empty when it still does).

    Compares the stored Cargo.toml features and dependencies with the current ones; with a
    toolchain and `check_crates`, also each variant's crate list with today's `cargo tree`.
    """
    reasons = []
    now = buildrecord.manifest_summary()
    for key in ("features", "dependencies"):
        if record.manifest.get(key) != now[key]:
            reasons.append(f"guest/Cargo.toml [{key}] changed since the record was made")
    if record.sources != buildrecord.sources_digest():
        reasons.append("guest/src or guest/Cargo.toml changed since the record was made")
    if check_crates:
        for name, v in record.variants.items():
            crates = buildrecord.dependency_crates(tuple(v.features))
            if crates is not None and crates != v.crates:
                gone, new = set(v.crates) - set(crates), set(crates) - set(v.crates)
                reasons.append(
                    f"{name}: cargo tree now differs (gone {sorted(gone)}, new {sorted(new)})"
                )
    return reasons


@pytest.fixture(scope="module")
def record() -> buildrecord.BuildRecord:
    return buildrecord.load()


def test_stored_record_still_describes_the_guest(record: buildrecord.BuildRecord) -> None:
    """guest/Cargo.toml's features and dependencies, and (with a toolchain) `cargo tree` for
    every variant, are what they were when the record was made."""
    reasons = stale_reasons(record)
    assert not reasons, f"{reasons}: {REGENERATE}"


def test_stored_record_describes_the_committed_prebuilt(
    record: buildrecord.BuildRecord,
) -> None:
    """The record's release build is guest/prebuilt/wasi_lab_guest.wasm, byte for byte.

    A release build of the same sources with the same toolchain is byte-identical to the
    prebuilt module (`--update-prebuilt` copies it after the same post-link passes), even
    from another checkout; so whoever rebuilds guest/prebuilt records again, and notebook
    01's sizes stay those of the module notebook 02 opens.
    """
    release = record.variants["release"]
    data = PREBUILT_MODULE.read_bytes()
    assert (release.size, release.sha256) == (len(data), hashlib.sha256(data).hexdigest()), (
        f"{record.prebuilt_line()} {REGENERATE}"
    )
    assert record.matches_prebuilt()
    assert "byte for byte" in record.prebuilt_line()
    assert all(len(v.sha256) == 64 for v in record.variants.values())


def test_prebuilt_line_says_when_the_record_predates_the_prebuilt(
    record: buildrecord.BuildRecord, tmp_path: Path
) -> None:
    prebuilt = tmp_path / "wasi_lab_guest.wasm"
    prebuilt.write_bytes(b"\0asm\1\0\0\0")
    old = copy.deepcopy(record)
    old.variants["release"].size, old.variants["release"].sha256 = 611_724, "0" * 64
    line = old.prebuilt_line(prebuilt)
    assert not old.matches_prebuilt(prebuilt)
    assert line.startswith("The record predates guest/prebuilt (611,724 vs 8 bytes)")
    assert "not the module notebook 02 opens" in line and "\n" not in line
    old.source = "live"
    assert old.prebuilt_line(prebuilt).startswith("This release build is not guest/prebuilt")
    same = copy.deepcopy(record)
    same.variants["release"].sha256 = hashlib.sha256(prebuilt.read_bytes()).hexdigest()
    assert same.matches_prebuilt(prebuilt)
    assert same.prebuilt_line(prebuilt).endswith(
        "byte for byte (8 bytes): the module notebook 02 opens."
    )


def test_sources_digest_sees_every_source_file_and_not_the_lock(tmp_path: Path) -> None:
    guest = tmp_path / "guest"
    shutil.copytree(GUEST_DIR, guest, ignore=shutil.ignore_patterns("target", "prebuilt"))
    base = buildrecord.sources_digest(guest)
    assert base == buildrecord.sources_digest()
    (guest / "Cargo.lock").write_text("# cargo writes this afresh on every build\n")
    assert buildrecord.sources_digest(guest) == base
    deep = sorted((guest / "src").rglob("*.rs"))[-1]
    deep.write_bytes(deep.read_bytes() + b"\n")
    assert buildrecord.sources_digest(guest) != base
    deep.write_bytes(deep.read_bytes()[:-1])
    deep.rename(deep.with_name("renamed.rs"))
    assert buildrecord.sources_digest(guest) != base


def test_stale_reasons_sees_changed_sources(record: buildrecord.BuildRecord) -> None:
    changed = copy.deepcopy(record)
    changed.sources = "0" * 64
    assert any("guest/src" in r for r in stale_reasons(changed, check_crates=False))
    assert not any("guest/src" in r for r in stale_reasons(record, check_crates=False))


def test_the_articles_panic_is_quoted_as_printed() -> None:
    """The article's three lines joined by spaces, its closing `})}` included."""
    text = rayon_lesson.ARTICLE_PANIC
    assert text.startswith("The global thread pool has not been initialized.: ")
    assert text.endswith('{ error: "operation not supported on this platform" })}')
    assert "  " not in text and "\n" not in text


def test_stored_record_is_complete(record: buildrecord.BuildRecord) -> None:
    assert set(record.variants) == set(buildrecord.VARIANTS)
    for name, v in record.variants.items():
        assert v.cold, f"{name} was not a cold build: {REGENERATE}"
        assert v.seconds > 0 and v.size > 0
        assert "wasi-lab-guest" in v.compiled
        assert any(line.startswith("Finished") for line in v.cargo_lines)
        assert sum(line.startswith("Compiling") for line in v.cargo_lines) == len(v.compiled)
        assert v.crates, f"{name}: no cargo tree crates recorded"
    assert record.size("debug") > record.size("release")
    for v in record.variants.values():  # notebook 01 prints these shares
        assert set(v.sections) == {"code", "data", "debug info", "names", "other"}
        assert 0 < sum(v.sections.values()) < v.size
    assert record.variants["debug"].debug_info_bytes > 0
    assert record.variants["release"].debug_info_bytes == 0
    assert record.extra_crates(), "the rayon-demo build should add crates"
    assert all(
        c.startswith(
            (
                "rayon",
                "crossbeam",
                "either",
                "num_cpus",
                "memoffset",
                "scopeguard",
                "cfg-if",
                "autocfg",
                "libc",
                "hermit",
                "lazy_static",
            )
        )
        for c in record.extra_crates()
    ), record.extra_crates()
    assert record.cpu_count and record.toolchain and record.target.startswith("wasm32")


def test_stored_rayon_demo_is_the_articles_panic(record: buildrecord.BuildRecord) -> None:
    demo = record.rayon_demo
    assert demo["pool_code"] < 0 and "ThreadPoolBuildError" in demo["pool_error"]
    assert demo["trapped"]
    assert "The global thread pool has not been initialized" in demo["panic_message"]
    assert demo["rayon_frames"], "the wasm backtrace should show rayon's frames"


def test_stored_image_probe(record: buildrecord.BuildRecord) -> None:
    """What notebook 01 says about image 0.24's default features rests on these facts."""
    probe = record.image_probe
    assert probe["build_ok"], probe.get("build_error")
    assert probe["image_version"].startswith("0.24.")
    assert "jpeg_rayon" in probe["image_features_using_rayon"]
    assert "jpeg_rayon" in probe["image_default_features"]
    assert probe["rayon_compiled"]
    assert probe["exit_code"] == 0 and not probe["trap"], probe
    assert any("wasm32" in line for line in probe["jpeg_worker_cfg"])


def test_stale_reasons_sees_a_changed_manifest(record: buildrecord.BuildRecord) -> None:
    changed = copy.deepcopy(record)
    changed.manifest["features"]["a-feature-nobody-has"] = []
    assert any("[features]" in r for r in stale_reasons(changed, check_crates=False))
    changed = copy.deepcopy(record)
    changed.variants["release"].crates = changed.variants["release"].crates[1:]
    if buildrecord.dependency_crates() is None:
        pytest.skip("no toolchain: cargo tree cannot be compared")
    assert any("release: cargo tree" in r for r in stale_reasons(changed))


def test_missing_or_corrupt_record_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(buildrecord.RecordError, match="python -m wasi_lab.buildrecord"):
        buildrecord.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(buildrecord.RecordError, match="not valid JSON"):
        buildrecord.load(bad)


def test_save_and_load_round_trip(record: buildrecord.BuildRecord, tmp_path: Path) -> None:
    path = buildrecord.save(record, tmp_path / "r.json")
    again = buildrecord.load(path)
    assert again == record
    assert "source" not in json.loads(path.read_text())


def test_where_says_stored_or_live(record: buildrecord.BuildRecord) -> None:
    assert record.where().startswith("Stored results, recorded ")
    assert f"{record.cpu_count}-core" in record.where(short=True)
    live = copy.deepcopy(record)
    live.source = "live"
    assert live.where().startswith("Built here")


def test_live_request_without_rust_falls_back_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(buildrecord, "_toolchain", lambda: None)
    rec = buildrecord.results(live=True)
    assert capsys.readouterr().out == ""  # the notebook prints rec.where(): one line
    assert rec.source == "fallback" and rec.variants
    line = rec.where()
    assert line.startswith("No wasm-capable Rust here") and "prebuilt" in line
    assert "\n" not in line and "LIVE_BUILD" not in line
    quiet = buildrecord.results(live=False)  # no switch to suggest without Rust
    assert quiet.source == "no-rust" and "LIVE_BUILD" not in quiet.where()
    assert "no wasm-capable Rust here" in quiet.where()


def test_format_variant_shortens_cargo_output(record: buildrecord.BuildRecord) -> None:
    text = buildrecord.format_variant(record.variants["release"], head=2)
    assert text.startswith("== release (cold") and "more `Compiling` lines" in text
    assert "Finished" in text


def test_rayon_demo_outcome_on_a_real_build() -> None:
    module = built_module(True, (rayon_lesson.RAYON_FEATURE,))
    if module is None:
        pytest.skip("no rayon-demo build here (`wasi-lab build --features rayon-demo`)")
    demo = rayon_lesson.rayon_demo_outcome(module)
    assert demo["pool_code"] == -7 and demo["pool_code_name"] == "BadArgument"
    assert demo["trapped"] and demo["rayon_frames"]
    assert "global thread pool" in demo["panic_message"]


def test_panic_text_old_and_new_rust() -> None:
    old = "thread 'main' panicked at 'boom: x', src/lib.rs:1:1\n"
    new = "thread 'main' panicked at src/lib.rs:1:1:\nboom: x\n"
    assert rayon_lesson.panic_text(old) == "boom: x"
    assert rayon_lesson.panic_text(new) == "boom: x"


def test_record_holds_no_path_of_the_machine_it_was_made_on() -> None:
    from wasi_lab.paths import REPO_ROOT

    text = buildrecord.RECORD_PATH.read_text()
    assert str(REPO_ROOT) not in text and "/home/" not in text and "/root/" not in text
    assert (
        buildrecord.scrub(f"Compiling x v0.1.0 ({REPO_ROOT}/guest)")
        == "Compiling x v0.1.0 (<repo>/guest)"
    )


def test_jpeg_worker_listing_live_or_stored(record: buildrecord.BuildRecord) -> None:
    probe = record.image_probe
    listing = jpeg_worker_listing(probe)
    assert "wasm32" in listing.text
    if buildrecord.find_crate_file(probe["jpeg_worker_file"]) is not None:
        assert listing.text.splitlines() == probe["jpeg_worker_cfg"]  # same lines, same source
    stored = jpeg_worker_listing({k: v for k, v in probe.items() if k != "jpeg_worker_file"})
    assert "kept in the build record" in stored.title
    assert stored.text.splitlines() == probe["jpeg_worker_cfg"]
