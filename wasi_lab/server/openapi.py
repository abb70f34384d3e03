"""The OpenAPI 3.0 document, written by hand so it says exactly what the server does.

Each operation lists every status it can answer; schemathesis (tests/test_server_schema.py)
checks the live server against it.
"""

from __future__ import annotations

from typing import Any

from wasi_lab.models.registry import MODELS
from wasi_lab.predict import MODE_IDS
from wasi_lab.server.errors import ERROR_CODES
from wasi_lab.server.limits import Limits

_ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _url_operation(summary: str, operation_id: str, image_errors: tuple[str, ...]) -> dict:
    """`GET /` and `POST /` are the same operation: a URL as text in, the top label out."""
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "summary": summary,
        "operationId": operation_id,
        "requestBody": {"required": True, "content": text},
        "responses": {
            "200": {"description": "the top label", "content": text},
            **_errors(
                *image_errors,
                "bad_url",
                "forbidden_address",
                "download_too_large",
                "fetch_failed",
                "fetch_timeout",
            ),
        },
    }


def _errors(*codes: str) -> dict[str, Any]:
    """Responses for these error codes, grouped by status."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(ERROR_CODES[code][0], []).append(code)
    return {
        str(status): {
            "description": "; ".join(f"{c}: {ERROR_CODES[c][1]}" for c in names),
            "content": {"application/json": {"schema": _ERROR_REF}},
        }
        for status, names in sorted(by_status.items())
    }


def build_openapi(limits: Limits) -> dict[str, Any]:
    image_errors = (
        "empty_body",
        "bad_request",
        "incomplete_body",
        "request_timeout",
        "unknown_model",
        "body_too_large",
        "image_too_large",
        "guest_out_of_memory",
        "bad_image",
        "guest_trap",
        "inference_failed",
        "internal_error",
        "model_unavailable",
        "overloaded",
        "deadline_exceeded",
    )
    query = [
        {
            "name": "model",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": list(MODELS), "default": "efficientnet-lite0"},
            "description": "which registered model classifies the image",
        },
        {
            "name": "top",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 5},
            "description": "how many classes to return",
        },
        {
            "name": "mode",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["model", *MODE_IDS], "default": "model"},
            "description": "preprocessing: 'model' is the one the network was trained with",
        },
    ]
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "wasi-lab prediction API",
            "version": "1.0",
            "description": "Image classification by a WebAssembly guest under wasmtime. "
            f"Body limit {limits.max_body} bytes, pixel limit "
            f"{limits.max_pixels}, deadline {limits.deadline_ms} ms.",
        },
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Classify the image in the body (JPEG or PNG bytes)",
                    "operationId": "predict",
                    "parameters": query,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "image/jpeg": binary,
                            "image/png": binary,
                            "application/octet-stream": binary,
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "the top classes and the timings",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Prediction"}
                                }
                            },
                        },
                        **_errors(*image_errors),
                    },
                }
            },
            "/": {
                "get": _url_operation(
                    "The article's endpoint: an image URL in, a label out",
                    "classifyUrlGet",
                    image_errors,
                ),
                "post": _url_operation("Same as GET /", "classifyUrlPost", image_errors),
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness, pool state and limits",
                    "operationId": "healthz",
                    "responses": {
                        "200": {
                            "description": "serving",
                            "content": {
                                "application/json": {
                                    "schema": {"type": "object", "required": ["status"]}
                                }
                            },
                        }
                    },
                }
            },
            "/models": {
                "get": {
                    "summary": "The registered models",
                    "operationId": "models",
                    "responses": {
                        "200": {
                            "description": "models and modes",
                            "content": {
                                "application/json": {
                                    "schema": {"type": "object", "required": ["models"]}
                                }
                            },
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.0",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string", "enum": list(ERROR_CODES)},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "Prediction": {
                    "type": "object",
                    "required": ["image", "model", "mode", "top", "timings_ms"],
                    "properties": {
                        "image": {"type": "string"},
                        "model": {"type": "string"},
                        "mode": {"type": "string"},
                        "top": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["index", "label", "prob"],
                                "properties": {
                                    "index": {"type": "integer"},
                                    "label": {"type": "string"},
                                    "prob": {"type": "number"},
                                },
                            },
                        },
                        "timings_ms": {
                            "type": "object",
                            "additionalProperties": {"type": "number"},
                        },
                        "image_size": {"type": "array", "items": {"type": "integer"}},
                        "pages": {"type": "object"},
                    },
                },
            }
        },
    }
