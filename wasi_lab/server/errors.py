"""One error shape for every failure: `{"error": {"code", "message"}}` with a fitting status.

Clients (and the OpenAPI document) can rely on `code` staying stable; `message` is for
people and may carry the guest's own explanation.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

#: Every code the server answers with, its HTTP status and when it happens (also the
#: table in the README and the OpenAPI document).
ERROR_CODES: dict[str, tuple[int, str]] = {
    "bad_request": (400, "a query parameter is out of range or unknown (top, mode)"),
    "empty_body": (400, "the request had no body"),
    "bad_url": (400, "the body is not a well-formed http(s) URL (or its port is 0)"),
    "incomplete_body": (400, "the body ended before its Content-Length"),
    "forbidden_address": (
        403,
        "the URL resolves to a loopback, private, link-local or "
        "metadata address, or an IPv6 form carrying one (loopback "
        "and private ones are allowed with --allow-private-urls; "
        "metadata and link-local never)",
    ),
    "not_found": (404, "no such path"),
    "unknown_model": (404, "the model is not in the registry"),
    "method_not_allowed": (405, "the path does not take this method"),
    "request_timeout": (
        408,
        "the request's headers or body did not arrive within --header-timeout / --body-timeout",
    ),
    "body_too_large": (413, "the request body is larger than --max-body"),
    "download_too_large": (413, "the image at the URL is larger than --max-download"),
    "image_too_large": (413, "the image header announces more pixels than --max-pixels"),
    "guest_out_of_memory": (413, "the guest hit its memory limit (--memory-limit-mb)"),
    "bad_image": (422, "the guest could not decode the bytes as a JPEG or PNG"),
    "guest_trap": (500, "the guest trapped; it was discarded and replaced"),
    "inference_failed": (500, "the engine refused or failed to run the graph"),
    "internal_error": (500, "a bug in the server; the message says where"),
    "fetch_failed": (
        502,
        "the image URL could not be downloaded (refused, non-200 answer, too many redirects)",
    ),
    "model_unavailable": (503, "the model or the engine exports it needs are not available"),
    "overloaded": (
        503,
        "too many requests are waiting for a guest, or every URL fetch "
        "slot (--max-fetches) stayed busy for --fetch-timeout",
    ),
    "deadline_exceeded": (
        504,
        "the request ran past --deadline-ms (the guest was interrupted, discarded and replaced)",
    ),
    "fetch_timeout": (504, "the image URL did not answer within --fetch-timeout"),
}


class ApiError(Exception):
    """Raised anywhere in request handling; the app turns it into the JSON error."""

    def __init__(self, code: str, message: str):
        if code not in ERROR_CODES:
            raise ValueError(f"undocumented error code {code!r}")
        self.code = code
        self.status = ERROR_CODES[code][0]
        self.message = message
        super().__init__(f"{code}: {message}")

    def to_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "1"} if self.status == 503 else None
        return JSONResponse(self.to_dict(), status_code=self.status, headers=headers)
