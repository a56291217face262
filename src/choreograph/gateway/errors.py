"""HTTP refusals in Event Grid's error body, and the status of each choreograph error.

Every 4xx and 5xx the gateway answers carries::

    {"error": {"code": "BadRequest", "message": "...",
               "details": [{"code": "InvalidEvent", "message": "...", "target": "eventTime"}]}}

``code`` is the HTTP status by name (as Event Grid answers), ``details[0].code`` says precisely
what was refused and ``target``, when known, names the offending property or attribute.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from choreograph.errors import (
    AlreadyExistsError,
    BackendError,
    BusClosedError,
    ChoreographError,
    EventTooLargeError,
    InvalidEventError,
    NotFoundError,
    ValidationError,
)

__all__ = [
    "HTTPProblem",
    "error_body",
    "error_response",
    "http_exception_handler",
    "problem_from_error",
    "problem_handler",
]

logger = logging.getLogger(__name__)


_STATUS_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


def _status_code_name(status: int) -> str:
    """``BadRequest`` for 400, ``PayloadTooLarge`` for 413 ... (Event Grid's ``error.code``)."""
    if status in _STATUS_CODES:
        return _STATUS_CODES[status]
    try:
        return HTTPStatus(status).phrase.title().replace(" ", "").replace("-", "")
    except ValueError:
        return str(status)


def _shown_path(request: Request) -> str:
    path = request.url.path
    return path if len(path) <= 200 else path[:197] + "..."


class HTTPProblem(Exception):
    """A request the gateway refuses: an HTTP status, a precise code and a message.

    Raised inside route handlers and turned into the Event Grid error body by
    :func:`problem_handler`. The message must never contain a secret.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        target: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.code = code or _status_code_name(status)
        self.target = target
        self.headers = dict(headers or {})
        super().__init__(message)


def error_body(
    status: int, message: str, *, code: str | None = None, target: str | None = None
) -> dict[str, Any]:
    """The Event Grid error body for a refusal."""
    detail: dict[str, Any] = {"code": code or _status_code_name(status), "message": message}
    if target is not None:
        detail["target"] = target
    return {"error": {"code": _status_code_name(status), "message": message, "details": [detail]}}


def error_response(problem: HTTPProblem) -> JSONResponse:
    return JSONResponse(
        error_body(problem.status, problem.message, code=problem.code, target=problem.target),
        status_code=problem.status,
        headers=problem.headers or None,
    )


def problem_from_error(exc: ChoreographError) -> HTTPProblem:
    """The HTTP refusal for an error raised by the bus (see :mod:`choreograph.errors`)."""
    message = str(exc)
    target = exc.attribute if isinstance(exc, InvalidEventError) else None
    code = type(exc).__name__.removesuffix("Error")
    if isinstance(exc, EventTooLargeError):
        return HTTPProblem(413, message, code="EventTooLarge", target=target)
    if isinstance(exc, ValidationError):
        return HTTPProblem(400, message, code=code, target=target)
    if isinstance(exc, NotFoundError):
        return HTTPProblem(404, message, code=code)
    if isinstance(exc, AlreadyExistsError):
        return HTTPProblem(409, message, code="AlreadyExists")
    if isinstance(exc, BusClosedError | BackendError):
        logger.error("the bus cannot serve a request: %s", exc)
        return HTTPProblem(503, "the bus is unavailable; try again later", code=code)
    logger.error("unexpected bus error", exc_info=exc)
    return HTTPProblem(500, "internal error", code="InternalError")


async def problem_handler(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: HTTPProblem and ChoreographError → Event Grid error body."""
    if isinstance(exc, HTTPProblem):
        return error_response(exc)
    if isinstance(exc, ChoreographError):
        return error_response(problem_from_error(exc))
    raise exc  # pragma: no cover - registered only for the two types above


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 in the Event Grid error body."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no such resource: {request.method} {_shown_path(request)}"
        return error_response(HTTPProblem(404, message, code="NotFound"))
    if exc.status_code == 405:
        message = f"{request.method} is not allowed on {_shown_path(request)}"
        return error_response(HTTPProblem(405, message, headers=exc.headers))
    return error_response(HTTPProblem(exc.status_code, exc.detail, headers=exc.headers))
