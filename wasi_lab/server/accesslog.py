"""One JSON line per request: what was asked, what was answered, where the time went.

JSON lines rather than Apache format because the interesting part is the breakdown
(queue, write, decode, infer), and `jq` or pandas read it as it is.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

ACCESS_LOGGER = "wasi_lab.server.access"


def configure_access_log(target: str | None = "-") -> logging.Logger:
    """`-` is stderr, a path appends to a file, None or "off" disables the log."""
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    if target in (None, "off", ""):
        logger.disabled = True
        return logger
    logger.disabled = False
    handler = (
        logging.StreamHandler(sys.stderr)
        if target == "-"
        else logging.FileHandler(target, encoding="utf-8")
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger


class AccessLogMiddleware:
    """ASGI middleware: handlers add fields to `request.state.access`; we add the rest."""

    def __init__(self, app: Any):
        self.app = app
        self.logger = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        fields: dict[str, Any] = {}
        scope.setdefault("state", {})["access"] = fields
        status = {"code": 500, "bytes": 0}

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body":
                status["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if not self.logger.disabled:
                client = scope.get("client") or ("-", 0)
                record = {
                    "ts": round(time.time(), 3),
                    "client": client[0],
                    "method": scope["method"],
                    "path": scope["path"],
                    "query": scope.get("query_string", b"").decode("latin-1"),
                    "status": status["code"],
                    "response_bytes": status["bytes"],
                    "total_ms": round((time.perf_counter() - start) * 1000, 3),
                    **fields,
                }
                self.logger.info(json.dumps(record, default=str))
