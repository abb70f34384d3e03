"""A pool of ready guests: the fix for the article's 774 ms per request.

The article's hyper server instantiated the module for every request because a wasmtime
`Instance` could not be shared across threads. We keep that rule (a Store is used by one
thread at a time) and pay the instantiation once per *worker* instead: the process holds
one Engine and one compiled, pre-linked module; each worker is a Guest (its own Store)
with the model parsed and resident. A request checks a worker out, runs in a worker
thread (wasmtime-py releases the GIL during wasm calls, so two workers really use two
cores), and checks it back in.

Deadlines use epoch interruption: a ticker thread bumps the engine's epoch every
`tick_ms`, and each request arms its guest with the ticks it has left. A guest that traps
or runs out of time is never handed out again: it is rebuilt in the background.

Linear memory never shrinks, so a guest that one odd image (a 16-bit RGBA 4096x4096
PNG: 8 bytes a pixel) grew past `limits.recycle_memory` is replaced the same way after its
answer is sent: the next request meets a guest as small as a fresh one, and the same
request always gets the same answer.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import wasmtime

from wasi_lab.models.registry import MODELS, get_model
from wasi_lab.predict import Classifier
from wasi_lab.runtime import (
    BadArgumentError,
    BadImageError,
    CompiledModule,
    Guest,
    GuestError,
    GuestOutOfMemoryError,
    GuestTrap,
    ImageTooLargeError,
)
from wasi_lab.server.errors import ApiError
from wasi_lab.server.limits import Limits

T = TypeVar("T")

#: Factor applied to the typical-latency estimate each time it refuses a request early.
REFUSAL_DECAY = 0.75


class EpochTicker:
    """Bumps the engine's epoch every `tick_ms` so armed guests trap at their deadline."""

    def __init__(self, engine: wasmtime.Engine, tick_ms: int):
        self.engine = engine
        self.tick_s = tick_ms / 1000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="epoch-ticker", daemon=True)

    def start(self) -> EpochTicker:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.engine.increment_epoch()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


@dataclass
class Worker:
    """One guest with the model resident; only ever used by the thread that checked it out."""

    id: int
    guest: Guest
    classifier: Classifier | None
    uses: int = 0
    generation: int = 0
    #: Linear memory right after the build (model resident): what every request starts from.
    base_bytes: int = 0


@dataclass
class PoolStats:
    served: int = 0
    failed: int = 0
    replaced: int = 0
    waiting: int = 0
    busy: int = 0
    replacing: int = 0
    lost: int = 0
    recycled: int = 0
    refused_early: int = 0
    build_ms: list[float] = field(default_factory=list)


def map_guest_error(exc: GuestError) -> ApiError:
    """The guest's refusal as the API error a client can act on."""
    if isinstance(exc, BadImageError):
        return ApiError("bad_image", exc.message)
    if isinstance(exc, ImageTooLargeError):
        return ApiError("image_too_large", exc.message)
    if isinstance(exc, GuestOutOfMemoryError):
        return ApiError("guest_out_of_memory", exc.message)
    if isinstance(exc, BadArgumentError):
        return ApiError("bad_request", exc.message)
    return ApiError("inference_failed", str(exc))


def model_problem(name: str) -> str | None:
    """Why `name` cannot be served (only registry names, never a path), or None."""
    if name not in MODELS:
        return f"unknown model {name!r}; the server knows {', '.join(MODELS)}"
    spec = get_model(name)
    if not spec.path.exists():
        return f"{name}: {spec.path.name} is not installed here (run `wasi-lab models fetch`)"
    return None


class GuestPool:
    """`limits.workers` guests for one model (or none: image-only guests for checks)."""

    def __init__(self, compiled: CompiledModule, model: str | None, limits: Limits):
        self.compiled = compiled
        self.model = model
        self.limits = limits
        self.size = max(1, limits.workers)
        self.stats = PoolStats()
        self.model_error: str | None = None
        self.replace_error: str | None = None
        #: Moving average of a successful job's duration: a request with less time left
        #: than this is refused *before* it starts, instead of being interrupted halfway
        #: (which would also cost a guest rebuild). Each such refusal shrinks it by
        #: REFUSAL_DECAY, so one slow success cannot refuse every later request forever.
        self.typical_ms = 0.0
        #: Memory of a freshly built guest (the largest seen); the memory pre-check
        #: counts from here, not from what a grown guest holds.
        self.base_bytes = 0
        #: Each guest's linear memory when it was last checked in (or built), by worker id.
        self.memory_bytes: dict[int, int] = {}
        self._idle: queue.Queue[Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(
            max_workers=self.size, thread_name_prefix=f"guest-{model or 'none'}"
        )
        self._replacers: list[threading.Thread] = []
        for wid in range(self.size):
            self._idle.put(self._new_worker(wid))

    # -- building and replacing guests

    def _new_worker(self, wid: int, generation: int = 0) -> Worker:
        start = time.perf_counter()
        guest = Guest(self.compiled, memory_limit=self.limits.memory_limit)
        classifier = None
        if self.model is not None and self.model_error is None:
            try:
                classifier = Classifier(self.model, module=self.compiled, guest=guest)
            except (AttributeError, GuestError, GuestTrap, OSError, ValueError) as exc:
                # e.g. a guest built before the engine's load_model export existed
                self.model_error = f"{self.model} cannot be loaded: {exc}"
        self.stats.build_ms.append((time.perf_counter() - start) * 1000)
        base = guest.pages * 65536
        self.base_bytes = max(self.base_bytes, base)
        self.memory_bytes[wid] = base
        return Worker(wid, guest, classifier, generation=generation, base_bytes=base)

    def _replace(self, worker: Worker) -> None:
        """Build the successor (a few tries); if that keeps failing the pool shrinks, and
        /healthz says so, rather than handing out a guest in an unknown state."""
        fresh = None
        for attempt in range(3):
            try:
                fresh = self._new_worker(worker.id, worker.generation + 1)
                break
            except Exception as exc:  # noqa: BLE001 - reported in /healthz, retried
                self.replace_error = f"rebuilding guest {worker.id}: {exc}"
                time.sleep(0.2 * (attempt + 1))
        with self._lock:
            self.stats.replacing -= 1
            if fresh is None:
                self.stats.lost += 1
            else:
                self.stats.replaced += 1
        if fresh is not None:
            self._idle.put(fresh)

    def discard(self, worker: Worker) -> None:
        """Never reuse this guest: build its successor off the request path."""
        with self._lock:
            self.stats.replacing += 1
        t = threading.Thread(
            target=self._replace,
            args=(worker,),
            daemon=True,
            name=f"replace-{self.model}-{worker.id}",
        )
        self._replacers.append(t)
        t.start()

    # -- running requests

    async def run(self, job: Callable[[Worker], T], arrived: float, timings: dict[str, float]) -> T:
        """Run `job(worker)` on a checked-out guest in a worker thread."""
        with self._lock:
            if self.stats.waiting >= self.limits.max_queue:
                raise ApiError(
                    "overloaded",
                    f"{self.stats.waiting} requests are already waiting for a {self.model} guest",
                )
            self.stats.waiting += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run_blocking, job, arrived, timings)

    def _run_blocking(
        self, job: Callable[[Worker], T], arrived: float, timings: dict[str, float]
    ) -> T:
        deadline = arrived + self.limits.deadline_ms / 1000
        try:
            left = deadline - time.perf_counter()
            worker = self._idle.get(timeout=left) if left > 0 else None
        except queue.Empty:
            worker = None
        finally:
            with self._lock:
                self.stats.waiting -= 1
        timings["queue"] = round((time.perf_counter() - arrived) * 1000, 3)
        if worker is None:
            with self._lock:
                self.stats.failed += 1
            raise ApiError(
                "deadline_exceeded",
                f"no {self.model} guest became free within {self.limits.deadline_ms} ms",
            )
        with self._lock:
            self.stats.busy += 1
        keep = True
        try:
            left_ms = (deadline - time.perf_counter()) * 1000
            if left_ms < self.typical_ms:
                with self._lock:
                    self.stats.refused_early += 1
                    self.typical_ms *= REFUSAL_DECAY
                raise ApiError(
                    "deadline_exceeded",
                    f"{left_ms:.0f} ms of the {self.limits.deadline_ms} ms deadline "
                    f"are left after queueing; a request takes about "
                    f"{self.typical_ms:.0f} ms",
                )
            if self.compiled.epochs:
                worker.guest.set_deadline(self.limits.deadline_ticks(left_ms))
            worker.uses += 1
            started = time.perf_counter()
            result = job(worker)
            took = (time.perf_counter() - started) * 1000
            with self._lock:
                self.stats.served += 1
                self.typical_ms = (
                    took if self.typical_ms == 0 else 0.9 * self.typical_ms + 0.1 * took
                )
            return result
        except GuestTrap as raised:
            keep = False
            # The first trap is the cause; a cleanup call on the poisoned guest (a dealloc
            # in a `finally`) raises a second one that would hide it.
            trap = worker.guest.poisoned or raised
            with self._lock:
                self.stats.failed += 1
            if trap.deadline:
                raise ApiError(
                    "deadline_exceeded",
                    f"the guest was interrupted after "
                    f"{self.limits.deadline_ms} ms; it was "
                    f"replaced",
                ) from None
            raise ApiError("guest_trap", f"{trap}; the guest was replaced") from None
        except GuestError as exc:
            with self._lock:
                self.stats.failed += 1
            raise map_guest_error(exc) from None
        except ApiError:
            with self._lock:
                self.stats.failed += 1
            raise
        except BaseException:
            keep = False  # an unknown state: do not hand this guest out again
            raise
        finally:
            with self._lock:
                self.stats.busy -= 1
            grown = (
                worker.guest.poisoned is None
                and worker.guest.pages * 65536 > self.limits.recycle_memory
            )
            if grown:
                with self._lock:
                    self.stats.recycled += 1
            if keep and worker.guest.poisoned is None and not grown:
                self.memory_bytes[worker.id] = worker.guest.pages * 65536
                if self.compiled.epochs:
                    worker.guest.store.set_epoch_deadline(1 << 62)
                self._idle.put(worker)
            else:
                self.discard(worker)

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "size": self.size,
                "idle": self._idle.qsize(),
                "busy": self.stats.busy,
                "waiting": self.stats.waiting,
                "replacing": self.stats.replacing,
                "served": self.stats.served,
                "failed": self.stats.failed,
                "replaced": self.stats.replaced,
                "ready": self.model_error is None,
                "recycled": self.stats.recycled,
                "refused_early": self.stats.refused_early,
                "base_mib": round(self.base_bytes / 2**20, 1),
                "guest_mib": round(max(self.memory_bytes.values(), default=0) / 2**20, 1),
                "typical_ms": round(self.typical_ms, 1),
                "lost": self.stats.lost,
                "replace_error": self.replace_error,
                "error": self.model_error,
            }

    def close(self) -> None:
        """Finish queued requests, then let replacements finish."""
        self._executor.shutdown(wait=True)
        for t in self._replacers:
            t.join(timeout=30)
