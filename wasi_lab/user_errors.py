"""One line for each mistake a user's input can cause, instead of a traceback or an errno.

Shared by the `wasi-lab` subcommands (`wasi_lab.cli`, `wasi_lab.models.cli`) and the model
download: a wrong path, a directory where a file belongs, or a refused connection is told
in words. A leaf module: it imports nothing from the package.
"""

from __future__ import annotations

import errno
import re

#: What to do about a file-system error, by errno: the second half of a one-line message.
_ERRNO_HINTS = {
    errno.ENOENT: "no such file or directory (check the path)",
    errno.EISDIR: "is a directory (pass a file)",
    errno.ENOTDIR: "part of the path is a file, not a directory",
    errno.EACCES: "permission denied (choose a path you may use)",
    errno.EPERM: "operation not permitted (choose a path you may use)",
    errno.EEXIST: "already exists and is not a directory",
    errno.EROFS: "the file system is read-only (choose another path)",
    errno.ENOSPC: "no space left on the device",
}


def os_error_line(exc: OSError) -> str:
    """One line for a file-system error: the path, then what is wrong, no errno number."""
    if exc.errno is None or exc.strerror is None:  # raised with a message of our own
        return str(exc)
    hint = _ERRNO_HINTS.get(exc.errno, exc.strerror.lower())
    return f"{exc.filename}: {hint}" if exc.filename else hint


def network_reason(exc: BaseException) -> str:
    """A failed connection's cause in words ("cannot connect (connection refused)"), without
    the errno number; a name that does not resolve asks whether we are offline."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return "the connection timed out"
    text = re.sub(r"\[Errno -?\d+\]\s*", "", str(exc)).strip()
    if isinstance(exc, httpx.ConnectError):
        low = text.lower()
        if any(
            s in low
            for s in (
                "name or service not known",
                "name resolution",
                "nodename nor servname",
                "getaddrinfo failed",
            )
        ):
            return f"cannot resolve the host name ({text}): are you offline?"
        return f"cannot connect ({low or 'no answer'})"
    return text or type(exc).__name__
