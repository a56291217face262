"""HTTP read API of the monitor, as Starlette routes for an application to mount.

    GET /transactions/{correlation_id}        the timeline (404 when unknown)
    GET /transactions?state=TimedOut&limit=50 the most recent transactions, {"value": [...]}

Errors use Event Grid's body: ``{"error": {"code": "NotFound", "message": "..."}}``.
"""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from choreograph.errors import BackendError, NotFoundError, ValidationError
from choreograph.monitor.timeline import Timeline, Transaction

__all__ = ["TraceSource", "monitor_routes"]

DEFAULT_LIST_LIMIT = 50


class TraceSource(Protocol):
    """What the routes read: a :class:`~choreograph.monitor.Monitor` or a
    :class:`~choreograph.monitor.TraceStore` (read-only in another process, say)."""

    def timeline(self, correlation_id: str) -> Timeline: ...

    def transactions(self, state: str | None = None, limit: int = 50) -> list[Transaction]: ...


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def monitor_routes(source: TraceSource) -> list[Route]:
    """The monitor's routes, reading from ``source`` (a Monitor or a TraceStore)."""

    async def get_transaction(request: Request) -> JSONResponse:
        correlation_id = request.path_params["correlation_id"]
        try:
            timeline = source.timeline(correlation_id)
        except NotFoundError as exc:
            return _error(404, "NotFound", str(exc))
        except BackendError as exc:
            return _error(503, "ServiceUnavailable", str(exc))
        return JSONResponse(timeline.to_dict())

    async def list_transactions(request: Request) -> JSONResponse:
        unknown = sorted(set(request.query_params) - {"state", "limit", "api-version"})
        if unknown:
            return _error(
                400, "BadRequest", f"unknown query parameter {unknown[0]!r}; use state or limit"
            )
        state = request.query_params.get("state") or None
        text = request.query_params.get("limit", str(DEFAULT_LIST_LIMIT))
        try:
            limit = int(text)
        except ValueError:
            return _error(400, "BadRequest", f"limit must be an integer, got {text!r}")
        try:
            transactions = source.transactions(state, limit)
        except ValidationError as exc:
            return _error(400, "BadRequest", str(exc))
        except BackendError as exc:
            return _error(503, "ServiceUnavailable", str(exc))
        return JSONResponse({"value": [transaction.to_dict() for transaction in transactions]})

    return [
        Route("/transactions", list_transactions, methods=["GET"]),
        Route("/transactions/{correlation_id:path}", get_transaction, methods=["GET"]),
    ]
