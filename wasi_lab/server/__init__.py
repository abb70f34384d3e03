"""`wasi-lab serve`: the article's prediction server, with a guest pool, limits and docs.

Modules: app (Starlette routes), pool (pre-instantiated guests, epoch deadlines),
urlfetch (SSRF-safe downloads), limits, errors, openapi, accesslog, harness (start/stop
servers for notebooks and tests), loadgen (the load test), cli (`add_serve_parser`).
"""

from wasi_lab.server.errors import ERROR_CODES, ApiError
from wasi_lab.server.limits import Limits

__all__ = ["ERROR_CODES", "ApiError", "Limits"]
