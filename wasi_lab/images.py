"""Sample images for the notebooks, and a careful way to load a learner's own.

The samples are photographs other packages ship: matplotlib's Grace Hopper (matplotlib is a
workshop dependency) and four of scikit-image's. scikit-image is not one: with SciPy and
the rest it would pull in it is ~200 MB of the workshop venv, for four files. So when
`skimage` is importable (the dev venv) the four come from it, as they always did; otherwise
`pip download` fetches the pinned scikit-image wheel without installing it, and only those
four members are taken out of the zip into a cache folder, each checked against the sha256
recorded here. pip's cache makes a second download free; a filled cache needs no pip at all.
Their provenance and licences are listed in ``images/manifest.json``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from wasi_lab.paths import APP_NAME, IMAGES_DIR

#: A generous cap: a phone photo is ~5 MB; anything much larger is probably a mistake.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")

#: The scikit-image release whose sample files the hashes below are of.
SKIMAGE_VERSION = "0.26.0"
#: One fixed wheel, whatever the learner's Python or OS: the data files are the same in every
#: wheel of a release, and a fixed one is the same download (and pip cache entry) for all.
SKIMAGE_WHEEL_TAGS = (
    "--platform",
    "manylinux_2_28_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
)
PIP_TIMEOUT_S = 600


class ImageError(ValueError):
    """An image could not be loaded (missing, too large, unreachable, wrong scheme)."""


class SampleFetchError(ImageError):
    """The scikit-image samples could not be had (no skimage, and the wheel not fetched)."""


@dataclass(frozen=True)
class SampleImage:
    file: str
    package: str
    resource: str
    description: str
    licence: str
    #: sha256 of the file in scikit-image ``SKIMAGE_VERSION`` (None: taken as installed).
    sha256: str | None = None


SAMPLES: tuple[SampleImage, ...] = (
    SampleImage(
        "grace_hopper.jpg",
        "matplotlib",
        "mpl-data/sample_data/grace_hopper.jpg",
        "Rear Admiral Grace Hopper in uniform (US Navy photograph)",
        "Public domain (work of the US federal government)",
    ),
    SampleImage(
        "chelsea.png",
        "scikit-image",
        "skimage/data/chelsea.png",
        "Chelsea the cat",
        "CC0 (photographer Stefan van der Walt)",
        "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    ),
    SampleImage(
        "coffee.png",
        "scikit-image",
        "skimage/data/coffee.png",
        "A cup of espresso, courtesy of Pikolo Espresso Bar",
        "CC0 (photographer Rachel Michetti)",
        "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    ),
    SampleImage(
        "astronaut.png",
        "scikit-image",
        "skimage/data/astronaut.png",
        "Astronaut Eileen Collins (NASA)",
        "Public domain (NASA)",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    ),
    SampleImage(
        "rocket.jpg",
        "scikit-image",
        "skimage/data/rocket.jpg",
        "Falcon 9 launch carrying DSCOVR (SpaceX)",
        "Public domain (released by SpaceX)",
        "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    ),
)


def skimage_data_dir() -> Path | None:
    """scikit-image's data folder when `skimage` is importable, found without importing it
    (importing skimage loads SciPy: seconds, for a folder name)."""
    try:
        spec = importlib.util.find_spec("skimage")
    except (ImportError, ValueError):  # a broken install, or `sys.modules["skimage"] = None`
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "data").is_dir():
            return Path(location) / "data"
    return None


def sample_cache_dir(
    env: dict[str, str] | None = None, platform: str = sys.platform, home: Path | None = None
) -> Path:
    """The per-user cache the wheel's members are extracted into: $XDG_CACHE_HOME/wasi-lab
    or ~/.cache/wasi-lab on Linux, ~/Library/Caches/wasi-lab on macOS,
    %LOCALAPPDATA%\\wasi-lab\\Cache on Windows (what platformdirs would answer)."""
    env = dict(os.environ) if env is None else env
    home = Path.home() if home is None else home
    if platform == "darwin":
        return home / "Library" / "Caches" / APP_NAME
    if platform.startswith(("win", "cygwin")):
        local = env.get("LOCALAPPDATA")
        return (Path(local) if local else home / "AppData" / "Local") / APP_NAME / "Cache"
    xdg = env.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".cache") / APP_NAME


def pip_download_command(dest: Path) -> list[str]:
    """`pip download` of the pinned scikit-image wheel into `dest`: no dependencies, nothing
    installed, nothing built (the tests swap this for a command that fails)."""
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        *SKIMAGE_WHEEL_TAGS,
        "--no-input",
        "--disable-pip-version-check",
        f"scikit-image=={SKIMAGE_VERSION}",
        "-d",
        str(dest),
    ]


def _sha256_is(path: Path, expected: str | None) -> bool:
    if not path.is_file():
        return False
    return hashlib.sha256(path.read_bytes()).hexdigest() == expected


def _skimage_samples() -> list[SampleImage]:
    return [s for s in SAMPLES if s.package == "scikit-image"]


def _advice(reason: str, dest: Path) -> str:
    """The one line a failed fetch prints: what went wrong, then the two ways out."""
    names = ", ".join(s.file for s in _skimage_samples())
    return (
        f"cannot get scikit-image's sample photographs: {reason}. Either install "
        f"scikit-image (`pip install scikit-image`) or copy {names} from a scikit-image "
        f"{SKIMAGE_VERSION} install (skimage/data/) into {dest}"
    )


def _pip_reason(stderr: str, stdout: str) -> str | None:
    """pip's own last word: its last ERROR line, else the last line of stderr, else of stdout
    (stdout's "Looking in indexes" lines say nothing about the failure)."""
    for text in (stderr, stdout):
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR:")]
        if errors or lines:
            return (errors or lines)[-1]
    return None


def _download_wheel(tmp: Path, dest: Path) -> Path:
    try:
        out = subprocess.run(
            pip_download_command(tmp), capture_output=True, text=True, timeout=PIP_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise SampleFetchError(
            _advice(f"`pip download` ran over {PIP_TIMEOUT_S} s", dest)
        ) from None
    except OSError as exc:
        raise SampleFetchError(_advice(f"`pip download` could not start ({exc})", dest)) from None
    wheels = sorted(tmp.glob("scikit_image-*.whl"))
    if out.returncode != 0 or len(wheels) != 1:
        tail = _pip_reason(out.stderr, out.stdout) or f"exit status {out.returncode}, no wheel"
        raise SampleFetchError(
            _advice(f"`pip download scikit-image=={SKIMAGE_VERSION}` failed ({tail})", dest)
        )
    return wheels[0]


def _extract(wheel: Path, samples: list[SampleImage], folder: Path, dest: Path) -> None:
    """Take `samples` out of the wheel into `folder`, refusing a member whose sha256 is not
    the recorded one (a wrong or tampered wheel never reaches the notebooks)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            for sample in samples:
                data = zf.read(sample.resource)
                digest = hashlib.sha256(data).hexdigest()
                if digest != sample.sha256:
                    raise SampleFetchError(
                        _advice(
                            f"{sample.resource} in {wheel.name} has sha256 {digest[:16]}..., "
                            f"not the recorded {str(sample.sha256)[:16]}...: refused",
                            dest,
                        )
                    )
                tmp = folder / f".{sample.file}.{os.getpid()}.tmp"  # two setups at once
                tmp.write_bytes(data)
                tmp.replace(folder / sample.file)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise SampleFetchError(
            _advice(f"{wheel.name} is not a usable scikit-image wheel ({exc})", dest)
        ) from None


def fetch_skimage_samples(
    samples: list[SampleImage], cache: Path | None = None, dest: Path = IMAGES_DIR
) -> list[Path]:
    """The cached copies of `samples` (scikit-image's), extracted from the pinned wheel when
    a copy is missing or its sha256 is wrong. `dest` only names the folder in the advice."""
    folder = (sample_cache_dir() if cache is None else Path(cache)) / (
        f"scikit-image-{SKIMAGE_VERSION}"
    )
    paths = [folder / s.file for s in samples]
    missing = [s for s, p in zip(samples, paths, strict=True) if not _sha256_is(p, s.sha256)]
    if missing:
        from wasi_lab.user_errors import os_error_line

        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="wasi-lab-wheel-") as tmp:
                _extract(_download_wheel(Path(tmp), dest), missing, folder, dest)
        except OSError as exc:
            raise SampleFetchError(
                _advice(f"cannot write the cache {folder}: {os_error_line(exc)}", dest)
            ) from None
    return paths


def sample_source(sample: SampleImage, cache: Path | None = None) -> Path:
    """Where the sample is read from: the installed package, or (scikit-image's, when it is
    not installed) the cache filled from its wheel."""
    if sample.package == "matplotlib":
        from matplotlib import cbook

        return Path(cbook.get_sample_data(sample.file, asfileobj=False))
    data_dir = skimage_data_dir()
    if data_dir is not None:
        return data_dir / sample.file
    return fetch_skimage_samples([sample], cache)[0]


def prepare_images(dest: Path = IMAGES_DIR, cache: Path | None = None) -> list[Path]:
    """Copy the samples into ``dest`` (skipping identical copies) and return their paths.

    Without scikit-image, a file already in ``dest`` with the recorded sha256 is kept as it
    is; the others come from the wheel cache (`fetch_skimage_samples`, one download for all).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    sources = {}
    if skimage_data_dir() is None:
        wanted = [s for s in _skimage_samples() if not _sha256_is(dest / s.file, s.sha256)]
        fetched = fetch_skimage_samples(wanted, cache, dest) if wanted else []
        sources = {s.file: p for s, p in zip(wanted, fetched, strict=True)}
        sources |= {s.file: dest / s.file for s in _skimage_samples() if s.file not in sources}
    out = []
    for sample in SAMPLES:
        src = sources.get(sample.file) or sample_source(sample, cache)
        target = dest / sample.file
        if not (
            target.exists()
            and target.stat().st_size == src.stat().st_size
            and target.read_bytes() == src.read_bytes()
        ):
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(target)
        out.append(target)
    return out


def list_images(directory: Path = IMAGES_DIR) -> list[Path]:
    """Image files in ``directory``, sorted by name (hidden/temporary files excluded)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def load_image_bytes(
    source: str | Path, max_bytes: int = MAX_IMAGE_BYTES, timeout: float = 20.0
) -> bytes:
    """Encoded bytes of a local file or an ``http(s)://`` URL, refusing anything over ``max_bytes``.

    The URL body is streamed and abandoned as soon as it exceeds the cap, so a
    wrong link to a huge file cannot fill memory.
    """
    text = str(source)
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise ImageError(f"unsupported URL scheme {scheme!r} (http or https only)")
        import httpx

        try:
            with httpx.stream("GET", text, timeout=timeout, follow_redirects=True) as resp:
                if resp.status_code != 200:
                    raise ImageError(f"HTTP {resp.status_code} fetching {text}")
                declared = resp.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise ImageError(
                        f"{text} is {int(declared)} bytes, over the {max_bytes}-byte limit"
                    )
                buf = bytearray()
                for chunk in resp.iter_bytes():
                    buf += chunk
                    if len(buf) > max_bytes:
                        raise ImageError(f"{text} is over the {max_bytes}-byte limit")
                return bytes(buf)
        except httpx.HTTPError as exc:
            raise ImageError(f"cannot fetch {text}: {exc}") from exc
    path = Path(text).expanduser()
    if not path.is_file():
        raise ImageError(f"no such image file: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise ImageError(f"{path} is {size} bytes, over the {max_bytes}-byte limit")
    return path.read_bytes()
