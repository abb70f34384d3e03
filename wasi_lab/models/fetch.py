"""Download the article's MobileNet V2 frozen graph, safely.

Three things can go wrong with a download, and each gets a deliberate answer:

* the network breaks half-way → we keep the bytes in a ``.part`` file (the error says
  how many) and the next call resumes with an HTTP ``Range`` request (or starts over if
  the server ignores ranges);
* the bytes are not the ones we expect → the SHA-256 is checked before anything
  is extracted, and a mismatching archive is deleted;
* the archive is hostile → members with absolute paths, ``..`` components, or
  links are refused, and only the one file we want is extracted, via a temporary
  file and ``os.replace`` so ``models/`` never holds a half-written model.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

import httpx
from tqdm.auto import tqdm

from wasi_lab.paths import MODELS_DIR
from wasi_lab.user_errors import network_reason

MOBILENET_URL = "https://storage.googleapis.com/mobilenet_v2/checkpoints/mobilenet_v2_1.4_224.tgz"
MOBILENET_SHA256 = "a20d0c8d698502dc6a620528871c97a588885df7737556243a3412b39fce85e0"
MOBILENET_MEMBER = "mobilenet_v2_1.4_224_frozen.pb"


class ModelError(RuntimeError):
    """A model could not be obtained: network failure, wrong hash, bad archive..."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _FatalError(ModelError):
    """An error status, or a .part we cannot write: retrying will not help."""


def _download_once(client: httpx.Client, url: str, part: Path, progress: bool) -> None:
    """One attempt: continue ``part`` from its current size if the server allows."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with client.stream("GET", url, headers=headers) as resp:
        if resp.status_code == 416:  # nothing left to send: the .part is already complete
            return
        if resp.status_code not in (200, 206):
            raise _FatalError(f"download failed: HTTP {resp.status_code} for {url}")
        if resp.status_code == 200:
            have = 0  # server ignored the Range header: start over
        elif not resp.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            # a resume from any other offset would splice the file: drop it and start over
            part.unlink(missing_ok=True)
            raise ModelError(
                f"the server resumed at the wrong offset "
                f"({resp.headers.get('Content-Range')!r}); starting over"
            )
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None and length.isdigit() else None
        mode = "ab" if have else "wb"
        try:
            fh = open(part, mode)  # closed by the with below
        except OSError as exc:
            raise _FatalError(f"cannot write {part}: {exc.strerror}") from exc
        with (
            fh,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=PurePosixPath(url).name,
                disable=not progress,
            ) as bar,
        ):
            for chunk in resp.iter_raw():  # raw: byte offsets must match for Range resumes
                try:
                    fh.write(chunk)
                except OSError as exc:  # disk full: retrying will not help either
                    raise _FatalError(f"cannot write {part}: {exc.strerror}") from exc
                bar.update(len(chunk))
        got = part.stat().st_size
        if total is not None and got != total:
            raise ModelError(f"download incomplete: {got} of {total} bytes")


def download(
    url: str,
    dest: Path,
    sha256: str,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest`` (via ``dest.part``), resuming, and verify its SHA-256.

    A failed download keeps what arrived in ``dest.part`` and says so; the next call sends
    a ``Range`` request for the rest.
    """
    if dest.exists() and sha256_file(dest) == sha256:
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(
            f"cannot create the models directory {dest.parent}: {exc.strerror}"
        ) from exc
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        for _attempt in range(retries):
            try:
                _download_once(client, url, part, progress)
                last_error = None
                break
            except _FatalError:
                raise
            except (httpx.HTTPError, ModelError, OSError) as exc:
                last_error = exc
    if last_error is not None:
        kept = part.stat().st_size if part.exists() else 0
        if kept:
            what = f"{kept:,} bytes kept in {part}: run the same command again to resume from there"
        else:
            what = "nothing was downloaded: check the connection and run the command again"
        raise ModelError(
            f"network failure downloading {url} after {retries} attempts "
            f"({network_reason(last_error)}); {what}"
        ) from last_error
    actual = sha256_file(part)
    if actual != sha256:
        part.unlink(missing_ok=True)
        raise ModelError(
            f"hash mismatch for {url}: expected sha256 {sha256}, got {actual} "
            "(the corrupt download was deleted)"
        )
    os.replace(part, dest)
    return dest


def _check_member(member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith(("/", "\\")):
        raise ModelError(f"archive member {member.name!r} has an absolute path")
    if ".." in name.parts:
        raise ModelError(f"archive member {member.name!r} escapes the target (path traversal)")
    if member.issym() or member.islnk():
        raise ModelError(f"archive member {member.name!r} is a link; refusing the archive")
    if not (member.isfile() or member.isdir()):
        raise ModelError(f"archive member {member.name!r} is not a regular file")


def extract_member(archive: Path, member_name: str, target: Path) -> Path:
    """Extract the single regular file called ``member_name`` (``./`` prefixes allowed)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                _check_member(m)
            # PurePosixPath drops "./", so "./x.pb" and "x.pb" both match; nested ones do not.
            wanted = [
                m for m in members if m.isfile() and PurePosixPath(m.name).parts == (member_name,)
            ]
            if not wanted:
                raise ModelError(f"{archive.name} has no member {member_name!r}")
            source = tar.extractfile(wanted[0])
            if source is None:
                raise ModelError(f"cannot read {member_name!r} from {archive.name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                os.chmod(tmp, 0o644)  # mkstemp makes 0600; a model is not a secret
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ModelError(f"cannot read archive {archive}: {exc}") from exc
    return target


def fetch_mobilenet(
    url: str = MOBILENET_URL,
    dest: Path = MODELS_DIR,
    progress: bool = True,
    sha256: str = MOBILENET_SHA256,
    member: str = MOBILENET_MEMBER,
    retries: int = 3,
) -> Path:
    """Download the MobileNet V2 1.4 archive, verify it, extract the frozen graph into ``dest``.

    Returns the path of the extracted ``.pb``. The verified archive is kept in
    ``dest`` so a second call does not hit the network.
    """
    dest = Path(dest)
    name = PurePosixPath(httpx.URL(url).path).name
    if name in ("", ".", ".."):  # a mirror URL without a file name: use the usual one
        name = PurePosixPath(MOBILENET_URL).name
    archive = dest / name
    download(url, archive, sha256, progress=progress, retries=retries)
    return extract_member(archive, member, dest / member)
