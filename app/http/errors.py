"""The API's one error shape, `{"error": {"code", "message", "details"}}`: the exception routes raise, the responses
the OpenAPI document lists, and the handlers that turn every failure into that shape, registered in one place."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.adapters.errors import is_outage
from app.http import schemas


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, details=None, headers=None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return JSONResponse(body, status_code=status, headers=headers)


MEANINGS = {
    400: "The request is malformed: a body that is not decodable JSON, or a cursor this API did not issue.",
    401: "Missing or unknown API key.",
    403: "The API key's role does not allow this.",
    404: "No such resource.",
    409: "The request conflicts with the resource's state.",
    413: "The request body is larger than the limit.",
    422: "The request is well-formed but invalid; the message names the problem (e.g. the field, or an "
    "Idempotency-Key already used for a different workflow or input).",
    429: "Too many requests for this API key; retry after the Retry-After header's seconds.",
    503: "A dependency (database, cache) is unreachable; retry after the Retry-After header's seconds.",
}
AUTHENTICATED = (401, 403, 422, 429, 503)
WITH_BODY = (400, 413)  # a body that cannot be decoded; a body over the limit


def error_responses(*statuses: int) -> dict[int, dict[str, Any]]:
    """The OpenAPI `responses` of these error statuses, each in the error shape."""
    return {status: {"model": schemas.ErrorOut, "description": MEANINGS[status]} for status in statuses}


async def _unexpected(_request: Request, error: Exception) -> JSONResponse:
    if is_outage(error):
        return error_response(
            503, "unavailable", "a dependency is unreachable; retry shortly", headers={"Retry-After": "1"}
        )
    return error_response(500, "internal", "an unexpected error; it has been logged")


async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
    return error_response(error.status, error.code, error.message, headers=error.headers)


async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
    details = [
        {"location": ".".join(str(part) for part in e["loc"]), "message": e["msg"], "type": e["type"]}
        for e in error.errors()
    ]
    summary = "; ".join(f"{d['location']}: {d['message']}" for d in details[:5])
    return error_response(422, "invalid_request", summary, details)


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    code = {400: "malformed_request", 404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    headers = getattr(error, "headers", None)
    if error.status_code == 405:
        # Starlette names only the first matching route's methods; a path served by several routes has more. The
        # routes of included routers are nested: iter_route_contexts walks them all.
        allowed = {
            method
            for route in iter_route_contexts(request.app.router.routes)
            if route.methods and route.matches(request.scope)[0] is not Match.NONE
            for method in route.methods
        }
        headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
    return error_response(error.status_code, code, str(error.detail), headers=headers)


def register_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
