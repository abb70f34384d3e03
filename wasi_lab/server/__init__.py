"""`wasi-lab serve`: the article's prediction server, with a guest pool, limits and docs.

Modules: app (Starlette routes), pool (pre-instantiated guests, epoch deadlines),
urlfetch (SSRF-safe downloads), limits, errors, openapi, accesslog, launch (`wasi-lab
serve` as a subprocess), imageorigin (a loopback image URL), lab (notebook 06's calls),
cli (`add_serve_parser`). The test servers live in tests/servers.py, the load generator in
benchmarks/loadgen.py.
"""

from wasi_lab.server.errors import ERROR_CODES, ApiError
from wasi_lab.server.limits import Limits

__all__ = ["ERROR_CODES", "ApiError", "Limits"]
