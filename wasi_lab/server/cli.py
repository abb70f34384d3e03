"""`wasi-lab serve`: the prediction API on 127.0.0.1:3000 (the article's port)."""

from __future__ import annotations

import argparse
import signal

from wasi_lab.server.limits import Limits, MiB


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    d = Limits()
    p = subparsers.add_parser(
        "serve", help="run the prediction API (POST /predict, the article's GET /)",
        description="Serve image classification over HTTP with a pool of pre-instantiated "
                    "guests. Only binds where you tell it (default loopback).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--model", default="efficientnet-lite0",
                   help="default model, loaded into every guest at start")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="guests per model (default: the CPU count)")
    p.add_argument("--max-body", type=int, default=d.max_body, help="request body bytes")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels,
                   help="width*height allowed by the image header")
    p.add_argument("--deadline-ms", type=int, default=d.deadline_ms,
                   help="wall time per request; the guest is interrupted past it")
    p.add_argument("--tick-ms", type=int, default=d.tick_ms, help="epoch ticker period")
    p.add_argument("--memory-limit-mb", type=int, default=d.memory_limit // MiB,
                   help="linear memory cap per guest")
    p.add_argument("--max-queue", type=int, default=d.max_queue,
                   help="requests waiting for a guest before 503")
    p.add_argument("--max-download", type=int, default=d.max_download,
                   help="URL mode: bytes downloaded")
    p.add_argument("--fetch-timeout", type=float, default=d.fetch_timeout,
                   help="URL mode: seconds for the whole download")
    p.add_argument("--max-redirects", type=int, default=d.max_redirects)
    p.add_argument("--allow-private-urls", action="store_true",
                   help="URL mode: allow loopback/private addresses (labs and tests only)")
    p.add_argument("--loopback-only-urls", action="store_true",
                   help="URL mode: refuse every address but loopback (labs, load tests)")
    p.add_argument("--test-hooks", action="store_true",
                   help="honour X-Test-Trap: 1 (forces a guest trap; tests only)")
    p.add_argument("--access-log", default="-",
                   help="JSON lines access log: '-' stderr, a file path, or 'off'")
    p.add_argument("--module", default=None, help="guest .wasm (default: the prebuilt one)")
    p.set_defaults(func=run_serve)


def limits_from_args(args: argparse.Namespace) -> Limits:
    return Limits(max_body=args.max_body, max_pixels=args.max_pixels,
                  deadline_ms=args.deadline_ms, tick_ms=args.tick_ms,
                  memory_limit=args.memory_limit_mb * MiB, workers=args.workers,
                  max_queue=args.max_queue, max_download=args.max_download,
                  fetch_timeout=args.fetch_timeout, max_redirects=args.max_redirects,
                  allow_private_urls=args.allow_private_urls,
                  loopback_only_urls=args.loopback_only_urls, test_hooks=args.test_hooks)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from wasi_lab.server.accesslog import configure_access_log
    from wasi_lab.server.app import create_app

    configure_access_log(args.access_log)
    app = create_app(limits_from_args(args), default_model=args.model,
                     module_path=args.module)
    # uvicorn drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal with
    # the handler it found; this one makes a graceful stop exit 0 instead of "killed".
    signal.signal(signal.SIGTERM, lambda *_: None)
    print(f"Listening on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=30)
    return 0
