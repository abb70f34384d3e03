"""uvicorn's HTTP/1.1 protocol with a deadline for the request line and headers.

uvicorn closes an *idle* keep-alive connection after `timeout_keep_alive`, but a client
that opens a connection and sends nothing, or drips its headers a byte a second, holds
the connection (and a slot of `limit_concurrency`) forever: every byte it sends cancels
the idle timer. This protocol arms a timer when a connection opens and again whenever a
keep-alive connection waits for its next request; if the request's headers are not
complete when it fires, the client gets a 408 `request_timeout` and the connection is
closed. (A slow *body* is bounded in the app: `limits.read_body`.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from wasi_lab.server.accesslog import ACCESS_LOGGER


class HeaderTimeoutH11Protocol(H11Protocol):
    """H11Protocol plus `header_timeout` seconds for each request's head."""

    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the head is in (or the peer erred)
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        message = (
            f"the request line and headers did not arrive within "
            f"{self.header_timeout:g} s (--header-timeout)"
        )
        body = json.dumps({"error": {"code": "request_timeout", "message": message}}).encode()
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.transport.close()
        logger = logging.getLogger(ACCESS_LOGGER)
        if not logger.disabled:
            client = self.client or ("-", 0)
            logger.info(
                json.dumps(
                    {
                        "ts": round(time.time(), 3),
                        "client": client[0],
                        "method": None,
                        "path": None,
                        "status": 408,
                        "error": "request_timeout",
                    }
                )
            )


def protocol_class(header_timeout: float) -> type[HeaderTimeoutH11Protocol]:
    """A subclass carrying this server's timeout (uvicorn instantiates the class itself)."""
    return type(
        "HeaderTimeoutH11Protocol",
        (HeaderTimeoutH11Protocol,),
        {"header_timeout": float(header_timeout)},
    )


def uvicorn_config(app: Any, **kwargs: Any) -> uvicorn.Config:
    """The uvicorn Config both `wasi-lab serve` and the test harness use."""
    limits = app.state.server.limits
    return uvicorn.Config(
        app,
        http=protocol_class(limits.header_timeout),
        timeout_keep_alive=limits.keep_alive,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
        **kwargs,
    )
