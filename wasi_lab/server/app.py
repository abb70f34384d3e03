"""The Starlette app: `POST /predict`, the article's `GET /` URL endpoint, health and docs.

Handlers stay thin: read the body under a cap, validate the query, hand a job to the guest
pool, shape the answer. Every failure is an `ApiError` rendered as
`{"error": {"code", "message"}}` (see errors.ERROR_CODES).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from wasi_lab.models.registry import MODELS
from wasi_lab.pngs import make_png
from wasi_lab.predict import MODE_IDS, Prediction, resolve_mode
from wasi_lab.runtime import CompiledModule, shared_module
from wasi_lab.server.accesslog import AccessLogMiddleware
from wasi_lab.server.errors import ApiError
from wasi_lab.server.imagehead import ImageHead, read_head
from wasi_lab.server.limits import Limits, read_body
from wasi_lab.server.openapi import build_openapi
from wasi_lab.server.pool import EpochTicker, GuestPool, Worker, model_problem
from wasi_lab.server.socketguard import install_from_environment
from wasi_lab.server.urlfetch import FetchPolicy, fetch_image, redact_url

DEFAULT_MODEL = "efficientnet-lite0"


class ServerState:
    """What one server process shares: the compiled module, the ticker, one pool per model."""

    def __init__(
        self,
        limits: Limits,
        default_model: str = DEFAULT_MODEL,
        module_path: Path | str | None = None,
    ):
        self.limits = limits
        self.default_model = default_model
        self.module_path = module_path
        self.compiled: CompiledModule | None = None
        self.ticker: EpochTicker | None = None
        self.pools: dict[str, GuestPool] = {}
        self.started = time.time()
        self._pool_lock = asyncio.Lock()
        #: URL downloads run on their own few threads, gated by a semaphore, so origins
        #: that drip cannot take the threads (or the guests) other requests need.
        self.fetch_executor = ThreadPoolExecutor(
            max_workers=max(1, limits.max_fetches), thread_name_prefix="url-fetch"
        )
        self.fetch_slots: asyncio.Semaphore | None = None

    def start(self) -> None:
        """Compile (or load the cached) module once, start the ticker, warm the default pool."""
        install_from_environment(self.limits.test_hooks, dict(os.environ))
        self.compiled = shared_module(self.module_path, epochs=True)
        self.ticker = EpochTicker(self.compiled.engine, self.limits.tick_ms).start()
        if model_problem(self.default_model) is None:
            self.pools[self.default_model] = GuestPool(
                self.compiled, self.default_model, self.limits
            )

    def stop(self) -> None:
        self.fetch_executor.shutdown(wait=False, cancel_futures=True)
        for pool in self.pools.values():
            pool.close()
        if self.ticker:
            self.ticker.stop()

    async def pool_for(self, model: str) -> GuestPool:
        if model in self.pools:
            return self.pools[model]
        problem = model_problem(model)
        if problem:
            raise ApiError("unknown_model" if model not in MODELS else "model_unavailable", problem)
        async with self._pool_lock:
            if model not in self.pools:
                assert self.compiled is not None
                self.pools[model] = await anyio.to_thread.run_sync(
                    GuestPool, self.compiled, model, self.limits
                )
        return self.pools[model]


def _state(request: Request) -> ServerState:
    return request.app.state.server


def _query_top(request: Request, labels: int) -> int:
    """ASCII digits only: `int()` would also take ' 5', '+5', '5_0' and '٥'."""
    raw = request.query_params.get("top", "5")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6):
        raise ApiError(
            "bad_request", f"top must be a whole number written in ASCII digits, not {raw[:40]!r}"
        )
    top = int(raw)
    if not 1 <= top <= labels:
        raise ApiError("bad_request", f"top must be between 1 and {labels}, not {top}")
    return top


def check_pixels(w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ApiError(
            "image_too_large",
            f"the image is {w}x{h} = {w * h} pixels; the limit is {max_pixels} (--max-pixels)",
        )


def check_memory(
    base_bytes: int, head: ImageHead, w: int, h: int, body: int, memory_limit: int
) -> None:
    """Refuse, before decoding, an image whose decode cannot fit under the guest's cap.

    Past the cap `memory.grow` fails and the guest aborts (a trap, then a rebuilt guest);
    the header already tells us size, bit depth and channels, so such images get a clean
    413 instead. The count starts from a *fresh* guest's memory (`base_bytes`), not from
    what this guest grew to, so the answer never depends on earlier requests (guests that
    grew past --recycle-memory-mb are replaced anyway, see pool.py).
    """
    need = head.decode_bytes(w, h, body)
    if base_bytes + need > memory_limit:
        raise ApiError(
            "guest_out_of_memory",
            f"decoding this {w}x{h} {head.format} needs about {need >> 20} MiB "
            f"on top of the {base_bytes >> 20} MiB a guest starts with; the cap "
            f"is {memory_limit >> 20} MiB (--memory-limit-mb)",
        )


def _spin(worker: Worker, ms: float) -> None:
    """Test hook: keep the guest busy with real wasm calls for `ms` milliseconds.

    Each call enters wasm, where the epoch deadline is checked, so a spin longer than the
    deadline is interrupted exactly as a slow inference would be, on any CPU.
    """
    tiny = make_png(2, 2)
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        worker.guest.image_size(tiny)


def _predict_job(
    pool: GuestPool,
    data: bytes,
    head: ImageHead,
    top: int,
    mode: str,
    trap: bool,
    spin_ms: float,
    timings: dict[str, float],
):
    """Runs in a worker thread with the guest checked out (see GuestPool.run)."""
    limits = pool.limits

    def job(worker: Worker) -> Prediction:
        if spin_ms:
            _spin(worker, spin_ms)
        t0 = time.perf_counter()
        w, h = worker.guest.image_size(data)
        timings["image_size"] = round((time.perf_counter() - t0) * 1000, 3)
        check_pixels(w, h, limits.max_pixels)
        check_memory(pool.base_bytes, head, w, h, len(data), limits.memory_limit)
        if trap:
            worker.guest.raw_call("trap_for_tests")
        if worker.classifier is None:
            raise ApiError("model_unavailable", pool.model_error or "no model loaded")
        pred = worker.classifier.classify(data, top=top, mode=mode)
        # setup costs of *this* guest (paid once, when the pool built it), not of the request
        timings["compile"] = round(pool.compiled.compile_ms, 3)
        timings["instantiate"] = round(worker.guest.instantiate_ms, 3)
        return pred

    return job


async def _classify(
    request: Request, data: bytes, model: str, top: int, mode: str, name: str
) -> dict[str, Any]:
    state = _state(request)
    limits = state.limits
    access = request.state.access
    access.update(model=model, mode=mode, body_bytes=len(data))
    if not data:
        raise ApiError("empty_body", "send the image bytes (JPEG or PNG) as the body")
    trap = limits.test_hooks and request.headers.get("x-test-trap") == "1"
    spin_ms = _spin_header(request) if limits.test_hooks else 0.0
    pool = await state.pool_for(model)
    # Cheap refusals from the header, before the request waits for a guest; the guest's
    # own reading of the header is checked again in the job.
    head = read_head(data)
    if head.width is not None and head.height is not None:
        check_pixels(head.width, head.height, limits.max_pixels)
        check_memory(pool.base_bytes, head, head.width, head.height, len(data), limits.memory_limit)
    arrived = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        pred = await pool.run(
            _predict_job(pool, data, head, top, mode, trap, spin_ms, timings), arrived, timings
        )
    finally:
        access.update(timings)
    out = pred.to_dict()
    out["image"] = name
    out["timings_ms"] = {
        **out["timings_ms"],
        **timings,
        "total": round((time.perf_counter() - arrived) * 1000, 3),
    }
    access.update({k: out["timings_ms"][k] for k in ("write", "decode", "infer")}, label=pred.label)
    return out


def _spin_header(request: Request) -> float:
    raw = request.headers.get("x-test-spin-ms", "")
    return float(min(int(raw), 60_000)) if raw.isascii() and raw.isdigit() else 0.0


def _mode(request: Request, model: str) -> str:
    mode = request.query_params.get("mode", "model")
    if model not in MODELS:
        raise ApiError("unknown_model", model_problem(model) or model)
    try:
        return resolve_mode(mode, MODELS[model])
    except ValueError as exc:
        raise ApiError("bad_request", str(exc)) from None


async def predict(request: Request) -> Response:
    state = _state(request)
    model = request.query_params.get("model", state.default_model)
    mode = _mode(request, model)
    top = _query_top(request, MODELS[model].labels)
    data = await read_body(request, state.limits.max_body, state.limits.body_timeout)
    return JSONResponse(await _classify(request, data, model, top, mode, "<request body>"))


async def classify_url(request: Request) -> Response:
    """The article's endpoint: an image URL as the plain-text body, the label as the answer."""
    state = _state(request)
    limits = state.limits
    raw = await read_body(request, 8192, limits.body_timeout)
    url = raw.decode("utf-8", "replace").strip()
    if not url:
        raise ApiError(
            "empty_body",
            "send an image URL as the body, e.g. curl "
            "--data-raw 'https://example.org/puppy.jpg' "
            "127.0.0.1:3000",
        )
    request.state.access["url"] = redact_url(url)[:500]
    policy = FetchPolicy(
        max_bytes=limits.max_download,
        timeout_s=limits.fetch_timeout,
        max_redirects=limits.max_redirects,
        allow_private=limits.allow_private_urls,
        loopback_only=limits.loopback_only_urls,
    )
    t0 = time.perf_counter()
    data = await _fetch(state, url, policy)
    request.state.access["fetch"] = round((time.perf_counter() - t0) * 1000, 3)
    model = state.default_model
    out = await _classify(request, data, model, 1, _mode(request, model), url)
    return PlainTextResponse(out["top"][0]["label"] + "\n")


async def _fetch(state: ServerState, url: str, policy: FetchPolicy) -> bytes:
    """Download on a fetch thread; waiting for a free one counts against --fetch-timeout."""
    if state.fetch_slots is None:
        state.fetch_slots = asyncio.Semaphore(max(1, state.limits.max_fetches))
    deadline = time.monotonic() + policy.timeout_s
    try:
        await asyncio.wait_for(state.fetch_slots.acquire(), timeout=policy.timeout_s)
    except TimeoutError:
        raise ApiError(
            "overloaded",
            f"all {state.limits.max_fetches} URL fetch slots stayed "
            f"busy for {policy.timeout_s:g} s (--max-fetches, "
            f"--fetch-timeout)",
        ) from None
    try:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(state.fetch_executor, fetch_image, url, policy, deadline)
    finally:
        state.fetch_slots.release()


async def healthz(request: Request) -> Response:
    state = _state(request)
    c = state.compiled
    return JSONResponse(
        {
            "status": "ok",
            "uptime_s": round(time.time() - state.started, 3),
            "module": None
            if c is None
            else {
                "path": str(c.path),
                "sha256": c.sha256,
                "compile_ms": round(c.compile_ms, 3),
                "from_cache": c.from_cache,
                "epochs": c.epochs,
            },
            "default_model": state.default_model,
            "pools": {name: pool.snapshot() for name, pool in state.pools.items()},
            "limits": asdict(state.limits),
        }
    )


async def models(request: Request) -> Response:
    state = _state(request)
    return JSONResponse(
        {
            "default": state.default_model,
            "modes": ["model", *MODE_IDS],
            "models": [
                {
                    "name": s.name,
                    "description": s.description,
                    "labels": s.labels,
                    "preprocess": s.preprocess,
                    "installed": s.path.exists(),
                    "loaded": s.name in state.pools,
                }
                for s in MODELS.values()
            ],
        }
    )


async def openapi(request: Request) -> Response:
    return JSONResponse(build_openapi(_state(request).limits))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    request.state.access["error"] = exc.code
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    if code is None:
        return JSONResponse(
            {"error": {"code": "bad_request", "message": str(exc.detail)}},
            status_code=exc.status_code,
        )
    return _api_error_sync(
        request, ApiError(code, f"{request.method} {request.url.path}: {exc.detail}")
    )


def _api_error_sync(request: Request, exc: ApiError) -> Response:
    request.state.access["error"] = exc.code
    return exc.response()


async def _internal_error(request: Request, exc: Exception) -> Response:
    return ApiError("internal_error", f"{type(exc).__name__}: {exc}").response()


def create_app(
    limits: Limits | None = None,
    default_model: str = DEFAULT_MODEL,
    module_path: Path | str | None = None,
) -> Starlette:
    """The ASGI app; guests are built when the server starts (lifespan), not at import."""
    state = ServerState(limits or Limits(), default_model, module_path)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(state.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(state.stop)

    app = Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/", classify_url, methods=["GET", "POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/models", models, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.server = state
    app.add_middleware(AccessLogMiddleware)
    return app
