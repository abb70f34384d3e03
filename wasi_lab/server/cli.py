"""`wasi-lab serve`: the prediction API on 127.0.0.1:3000 (the article's port)."""

from __future__ import annotations

import argparse
import errno
import signal
import socket
import sys

from wasi_lab.server.limits import Limits, MiB


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    d = Limits()
    p = subparsers.add_parser(
        "serve",
        help="run the prediction API (POST /predict, the article's GET /)",
        description="Serve image classification over HTTP with a pool of pre-instantiated "
        "guests. Only binds where you tell it (default loopback).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument(
        "--model",
        default="efficientnet-lite0",
        help="default model, loaded into every guest at start",
    )
    p.add_argument(
        "--workers", type=int, default=d.workers, help="guests per model (default: the CPU count)"
    )
    p.add_argument("--max-body", type=int, default=d.max_body, help="request body bytes")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=d.max_pixels,
        help="width*height allowed by the image header",
    )
    p.add_argument(
        "--deadline-ms",
        type=int,
        default=d.deadline_ms,
        help="wall time per request; the guest is interrupted past it",
    )
    p.add_argument("--tick-ms", type=int, default=d.tick_ms, help="epoch ticker period")
    p.add_argument(
        "--memory-limit-mb",
        type=int,
        default=d.memory_limit // MiB,
        help="linear memory cap per guest",
    )
    p.add_argument(
        "--max-queue", type=int, default=d.max_queue, help="requests waiting for a guest before 503"
    )
    p.add_argument(
        "--max-download", type=int, default=d.max_download, help="URL mode: bytes downloaded"
    )
    p.add_argument(
        "--fetch-timeout",
        type=float,
        default=d.fetch_timeout,
        help="URL mode: seconds for the whole download",
    )
    p.add_argument("--max-redirects", type=int, default=d.max_redirects)
    p.add_argument(
        "--max-fetches",
        type=int,
        default=d.max_fetches,
        help="URL mode: downloads at once, on their own threads",
    )
    p.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="URL mode: allow loopback/private addresses (labs and tests only; "
        "metadata and link-local addresses stay refused)",
    )
    p.add_argument(
        "--loopback-only-urls",
        action="store_true",
        help="URL mode: allow loopback addresses and nothing else (labs, load "
        "tests); needs no other flag",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=d.header_timeout,
        help="seconds for a request's line and headers (then 408)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=d.body_timeout,
        help="seconds for a whole request body (then 408)",
    )
    p.add_argument(
        "--keep-alive",
        type=float,
        default=d.keep_alive,
        help="seconds an idle keep-alive connection stays open",
    )
    p.add_argument(
        "--recycle-memory-mb",
        type=int,
        default=d.recycle_memory // MiB,
        help="a guest whose memory grew past this is replaced after its request",
    )
    p.add_argument(
        "--test-hooks",
        action="store_true",
        help="honour X-Test-Trap: 1 and X-Test-Spin-Ms: N (tests only)",
    )
    p.add_argument(
        "--access-log", default="-", help="JSON lines access log: '-' stderr, a file path, or 'off'"
    )
    p.add_argument("--module", default=None, help="guest .wasm (default: the prebuilt one)")
    p.set_defaults(func=run_serve)


def limits_from_args(args: argparse.Namespace) -> Limits:
    return Limits(
        max_body=args.max_body,
        max_pixels=args.max_pixels,
        deadline_ms=args.deadline_ms,
        tick_ms=args.tick_ms,
        memory_limit=args.memory_limit_mb * MiB,
        workers=args.workers,
        max_queue=args.max_queue,
        max_download=args.max_download,
        fetch_timeout=args.fetch_timeout,
        max_redirects=args.max_redirects,
        max_fetches=args.max_fetches,
        allow_private_urls=args.allow_private_urls,
        loopback_only_urls=args.loopback_only_urls,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive=args.keep_alive,
        recycle_memory=args.recycle_memory_mb * MiB,
        test_hooks=args.test_hooks,
    )


def bind_listener(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is announced (OSError if it cannot be)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"wasi-lab serve: port {port} on {host} is already in use (another server "
            f"is running there); stop it or pick another with --port"
        )
    if exc.errno == errno.EACCES:
        return (
            f"wasi-lab serve: not allowed to listen on port {port} (ports below 1024 "
            f"need root); pick another with --port"
        )
    reason = exc.strerror or str(exc)
    return f"wasi-lab serve: cannot listen on {host}:{port}: {reason}; check --host/--port"


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from wasi_lab.server.accesslog import configure_access_log
    from wasi_lab.server.app import create_app
    from wasi_lab.server.protocol import uvicorn_config

    try:
        sock = bind_listener(args.host, args.port)
    except (OSError, UnicodeError) as exc:
        err = exc if isinstance(exc, OSError) else OSError(str(exc))
        print(_bind_problem(args.host, args.port, err), file=sys.stderr, flush=True)
        return 1
    configure_access_log(args.access_log)
    app = create_app(limits_from_args(args), default_model=args.model, module_path=args.module)
    # uvicorn drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal with
    # the handler it found; this one makes a graceful stop exit 0 instead of "killed".
    signal.signal(signal.SIGTERM, lambda *_: None)
    print(f"Listening on http://{args.host}:{args.port}", flush=True)
    server = uvicorn.Server(uvicorn_config(app))
    server.run(sockets=[sock])
    return 0 if server.started else 1
