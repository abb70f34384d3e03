"""schemathesis against the live server's own OpenAPI document (bounded, derandomized).

Every generated request must get a status the document lists for that operation, with a
body matching its schema; a 5xx is acceptable only where the document says so (a trap, a
deadline), and every error body has the `{"error": {"code", "message"}}` shape.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.servers import run_in_thread
from wasi_lab.server.errors import ERROR_CODES
from wasi_lab.server.limits import Limits

EXAMPLES = 25


@pytest.fixture(scope="module")
def server():
    # loopback-only URL mode: generated URL bodies can never reach another machine
    limits = Limits(
        workers=2,
        max_body=256 * 1024,
        fetch_timeout=1.0,
        deadline_ms=20_000,
        loopback_only_urls=True,
    )
    with run_in_thread(limits) as srv:
        yield srv


@pytest.fixture(scope="module")
def schema(server):
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def _operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def test_schema_lists_every_operation(schema) -> None:
    names = {(op.method.upper(), op.path) for op in _operations(schema)}
    assert {
        ("POST", "/predict"),
        ("GET", "/"),
        ("POST", "/"),
        ("GET", "/healthz"),
        ("GET", "/models"),
    } <= names


def _fuzz(op, base_url: str, seen: dict[str, set[int]]) -> None:
    documented = {int(code) for code in op.definition.raw["responses"]}
    name = f"{op.method.upper()} {op.path}"

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy())
    def check(case) -> None:
        response = case.call(base_url=base_url, timeout=60)
        status = response.status_code
        seen.setdefault(name, set()).add(status)
        assert status in documented, (name, status, response.text[:300])
        if status >= 500:  # only the documented server-side failures
            code = response.json()["error"]["code"]
            assert ERROR_CODES[code][0] == status and code != "internal_error", code
        if status >= 400:
            body = response.json()
            assert set(body) == {"error"} and body["error"]["code"] in ERROR_CODES
        case.validate_response(
            response,
            checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
        )

    check()


@pytest.mark.slow
def test_generated_requests_conform(schema, server) -> None:
    seen: dict[str, set[int]] = {}
    for op in _operations(schema):
        _fuzz(op, server.url, seen)
    print(seen)
    assert "POST /predict" in seen and "GET /" in seen, seen
