"""The service SDK: services declare what they consume and emit; the runtime does the rest."""

from choreograph.sdk.context import Context, UndeclaredEventError, emitted_id
from choreograph.sdk.endpoint import ServiceEndpoint
from choreograph.sdk.runner import RunningService
from choreograph.sdk.service import HandlerSpec, Service
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
    "RunningService",
    "Service",
    "ServiceEndpoint",
    "ServiceStore",
    "SqliteServiceStore",
    "UndeclaredEventError",
    "emitted_id",
    "open_service_store",
]
