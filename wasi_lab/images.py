"""Sample images for the notebooks, and a careful way to load a learner's own.

The samples come from packages already installed (matplotlib and scikit-image
ship a few photographs), so preparing them needs no network. Their provenance
and licences are listed in ``images/manifest.json``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from wasi_lab.paths import IMAGES_DIR

#: A generous cap: a phone photo is ~5 MB; anything much larger is probably a mistake.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")


class ImageError(ValueError):
    """An image could not be loaded (missing, too large, unreachable, wrong scheme)."""


@dataclass(frozen=True)
class SampleImage:
    file: str
    package: str
    resource: str
    description: str
    licence: str


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
    ),
    SampleImage(
        "coffee.png",
        "scikit-image",
        "skimage/data/coffee.png",
        "A cup of espresso, courtesy of Pikolo Espresso Bar",
        "CC0 (photographer Rachel Michetti)",
    ),
    SampleImage(
        "astronaut.png",
        "scikit-image",
        "skimage/data/astronaut.png",
        "Astronaut Eileen Collins (NASA)",
        "Public domain (NASA)",
    ),
    SampleImage(
        "rocket.jpg",
        "scikit-image",
        "skimage/data/rocket.jpg",
        "Falcon 9 launch carrying DSCOVR (SpaceX)",
        "Public domain (released by SpaceX)",
    ),
)


def sample_source(sample: SampleImage) -> Path:
    """Where the installed package keeps the sample."""
    if sample.package == "matplotlib":
        from matplotlib import cbook

        return Path(cbook.get_sample_data(sample.file, asfileobj=False))
    import skimage.data

    return Path(skimage.data.__file__).parent / sample.file


def prepare_images(dest: Path = IMAGES_DIR) -> list[Path]:
    """Copy the samples into ``dest`` (skipping identical copies) and return their paths."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for sample in SAMPLES:
        src, target = sample_source(sample), dest / sample.file
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
