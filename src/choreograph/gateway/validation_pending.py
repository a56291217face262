"""Manual webhook validation: the one-time codes of the ``validationUrl``s, and their routes.

A handshake answered with a 200 but without the ``validationCode`` leaves the subscription
``AwaitingManualAction``; :class:`PendingValidations` keeps the code it issued for the
``validationUrl`` and settles the subscription when that URL is used (``Succeeded``) or when the
window closes (``Failed``). The verdicts of every validation are recorded here, by :func:`_apply`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from choreograph.bus.bus import Bus
from choreograph.bus.subscription import ProvisioningState, SubscriptionRecord, WebHookDestination
from choreograph.clock import Clock, sleep_until
from choreograph.errors import SubscriptionNotFoundError, TopicNotFoundError
from choreograph.gateway.addresses import redact_url
from choreograph.gateway.errors import error_body

__all__ = ["PendingValidations", "RedeemResult", "validation_routes"]

logger = logging.getLogger("choreograph.gateway.validation")
"""The validation log, one logger for the handshake and its manual settling."""


@dataclass(slots=True)
class _Verdict:
    state: ProvisioningState
    reason: str


@dataclass(slots=True, eq=False)
class _Pending:
    record: SubscriptionRecord
    code: str
    expires_at: float
    redeemed: bool = False
    watcher: asyncio.Task[None] | None = None


RedeemResult = Literal["Succeeded", "NotFound", "Expired"]


class PendingValidations:
    """Manual validations in progress: the one-time code of each ``validationUrl``, its expiry
    on the clock, and the watcher task that fails the subscription when the window closes.

    An async context manager (it owns the watchers); enter it before serving its routes.
    """

    def __init__(
        self, bus: Bus, *, clock: Clock | None = None, window_seconds: float = 600.0
    ) -> None:
        self.bus = bus
        self.clock: Clock = clock or bus.clock
        self.window_seconds = window_seconds
        self._entries: dict[tuple[str, str], _Pending] = {}
        self._lock = asyncio.Lock()
        """Orders state changes: a GET on the URL and the handshake's answer may race."""
        self._group: asyncio.TaskGroup | None = None

    async def __aenter__(self) -> Self:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        for entry in self._entries.values():
            if entry.watcher is not None:
                entry.watcher.cancel()
        self._entries.clear()
        if group is not None:
            await group.__aexit__(kind, error, tb)

    def issue(self, record: SubscriptionRecord) -> str:
        """A fresh one-time code for ``record``'s ``validationUrl`` (replacing any earlier one)."""
        self._drop((record.topic, record.name))
        code = secrets.token_urlsafe(32)
        expires_at = self.clock.now() + self.window_seconds
        self._entries[(record.topic, record.name)] = _Pending(record, code, expires_at)
        return code

    def _drop(self, key: tuple[str, str], entry: _Pending | None = None) -> None:
        current = self._entries.get(key)
        if current is not None and (entry is None or current is entry):
            del self._entries[key]
            if current.watcher is not None:
                current.watcher.cancel()

    def withdraw(self, record: SubscriptionRecord, code: str) -> None:
        """Forget the code issued for ``record`` (if it is still the current one)."""
        entry = self._entry(record, code)
        if entry is not None:
            self._drop((record.topic, record.name), entry)

    def _entry(self, record: SubscriptionRecord, code: str) -> _Pending | None:
        entry = self._entries.get((record.topic, record.name))
        return entry if entry is not None and entry.code == code else None

    async def _settle(
        self, record: SubscriptionRecord, code: str, verdict: _Verdict
    ) -> ProvisioningState:
        """Apply the handshake's verdict, unless the URL was used meanwhile (which wins)."""
        key = (record.topic, record.name)
        async with self._lock:
            entry = self._entry(record, code)
            if entry is None:  # replaced by a newer validation of the subscription
                return verdict.state
            if entry.redeemed:  # the URL was used during the handshake: the owner consented
                self._drop(key, entry)
                return "Succeeded"
            if verdict.state != "AwaitingManualAction":
                self._drop(key, entry)
            elif self._group is None:
                self._drop(key, entry)
                verdict = _Verdict("Failed", "manual validation is not being served")
            else:
                entry.watcher = self._group.create_task(self._expire(entry))
            await _apply(self.bus, record, verdict)
            return verdict.state

    async def _expire(self, entry: _Pending) -> None:
        await sleep_until(self.clock, entry.expires_at)
        async with self._lock:
            key = (entry.record.topic, entry.record.name)
            if self._entries.get(key) is not entry:
                return
            del self._entries[key]
            verdict = _Verdict("Failed", f"validationUrl not used within {self.window_seconds:g} s")
            try:
                await _apply(self.bus, entry.record, verdict)
            except Exception:  # a failing watcher must not bring down the others
                logger.exception("recording the failed validation of %s/%s failed", *key)

    async def redeem(self, topic: str, name: str, code: str) -> RedeemResult:
        """Use a ``validationUrl``: ``Succeeded`` (recorded on the bus), ``Expired`` or
        ``NotFound`` (no such pending validation, wrong or used code)."""
        async with self._lock:
            entry = self._entries.get((topic, name))
            if (
                entry is None
                or entry.redeemed
                or not secrets.compare_digest(code.encode(), entry.code.encode())
            ):
                return "NotFound"
            if self.clock.now() > entry.expires_at:
                return "Expired"
            entry.redeemed = True
            if entry.watcher is not None:  # the handshake is over: nothing else will settle it
                self._drop((topic, name), entry)
            applied = await _apply(
                self.bus, entry.record, _Verdict("Succeeded", "validated through the validationUrl")
            )
            return "Succeeded" if applied else "NotFound"

    def routes(self) -> list[Route]:
        """``GET /validate/{topic}/{subscription}?code=…``: the ``validationUrl`` endpoint."""

        async def validate(request: Request) -> Response:
            if request.method != "GET":  # Starlette adds HEAD; only a GET validates
                return Response(status_code=405, headers={"Allow": "GET"})
            topic = request.path_params["topic"]
            name = request.path_params["subscription"]
            code = request.query_params.get("code")
            if not code:
                message = "the validation URL needs its `code` query parameter"
                return JSONResponse(error_body(400, message, target="code"), status_code=400)
            result = await self.redeem(topic, name, code)
            if result == "Succeeded":
                return JSONResponse({"provisioningState": "Succeeded"})
            if result == "Expired":
                message = f"the validation URL of {topic}/{name} has expired"
                return JSONResponse(error_body(410, message, code="Expired"), status_code=410)
            message = f"no pending validation of {topic}/{name} with this code"
            return JSONResponse(error_body(404, message), status_code=404)

        return [Route("/validate/{topic}/{subscription}", validate, methods=["GET"])]


def validation_routes(pending: PendingValidations) -> list[Route]:
    """The routes serving ``pending``'s ``validationUrl``s, to mount in the gateway app."""
    return pending.routes()


async def _apply(bus: Bus, record: SubscriptionRecord, verdict: _Verdict) -> bool:
    """Record ``verdict`` if the subscription still has the validated endpoint."""
    label = f"{record.topic}/{record.name}"
    try:
        current = bus.get_subscription_record(record.topic, record.name)
    except (SubscriptionNotFoundError, TopicNotFoundError):
        logger.info("validation of %s ignored: the subscription was deleted", label)
        return False
    if current.spec.destination != record.spec.destination:
        logger.info("validation of %s ignored: its endpoint changed meanwhile", label)
        return False
    if current.provisioning_state != verdict.state:
        await bus.set_provisioning_state(record.topic, record.name, verdict.state)
    destination = record.spec.destination
    shown = (
        redact_url(destination.endpoint_url) if isinstance(destination, WebHookDestination) else ""
    )
    level = logging.WARNING if verdict.state == "Failed" else logging.INFO
    logger.log(level, "webhook %s (%s): %s, %s", label, shown, verdict.state, verdict.reason)
    return True
