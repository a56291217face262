"""The service SDK: services declare what they consume and emit; the runtime does the rest."""

from choreograph.sdk.context import Context, UndeclaredEventError, emitted_id
from choreograph.sdk.endpoint import ServiceEndpoint
from choreograph.sdk.runner import RunningService
from choreograph.sdk.service import HandlerSpec, Middleware, Service, Startup
from choreograph.sdk.state import StateView
from choreograph.sdk.store import (
    MemoryServiceStore,
    ServiceStore,
    SqliteServiceStore,
    open_service_store,
)

__all__ = [
    "Context",
    "HandlerSpec",
    "MemoryServiceStore",
    "Middleware",
    "RunningService",
    "Service",
    "ServiceEndpoint",
    "ServiceStore",
    "SqliteServiceStore",
    "Startup",
    "StateView",
    "UndeclaredEventError",
    "emitted_id",
    "open_service_store",
]
