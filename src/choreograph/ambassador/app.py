"""The ambassador: a sidecar that talks to the bus for a plain HTTP service that knows nothing of it.

    async with (
        GatewayClient(gateway_url, admin_token=token) as gateway,
        Ambassador(settings, gateway) as ambassador,
    ):
        await serve(ambassador.app, [listener], on_listening=ambassador.register)

It registers the webhook subscription ``<name>-<handler>`` (answering the validation handshakes
itself), forwards each delivered event to the service as plain JSON, maps the answer to the
bus's outcome and publishes the events the service answered with, built exactly as the SDK
builds them (:class:`~choreograph.sdk.Context`: deterministic ids derived from the consumed
event, ``correlationid``, ``causationid``, the ambassador's span as ``traceparent``), before it
acknowledges the delivery. The JSON contract is in :mod:`choreograph.ambassador.contract`.

Routes: ``POST``/``OPTIONS /handlers/<handler>`` (the subscription's endpoint), ``POST
/publish`` (for the service, on localhost: publish an event of a declared type) and ``GET
/healthz`` (503 until the subscription is registered).

The ambassador keeps no inbox: a redelivered event reaches the service again (with a higher
``attempt``), and the events it answers with get the same ids, which the topics' de-duplication
absorbs. Effects inside the service are its own business to keep idempotent.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import httpx
import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from choreograph.ambassador.contract import (
    AnswerError,
    NextEvent,
    outcome_of_status,
    parse_answer,
    parse_publish,
    service_request,
)
from choreograph.ambassador.settings import AmbassadorSettings
from choreograph.bus.subscription import WebHookDestination
from choreograph.clock import Clock, SystemClock, format_timestamp
from choreograph.errors import InvalidEventError
from choreograph.events import CloudEvent, ExtensionValue, encode_event
from choreograph.gateway.errors import (
    HTTPProblem,
    error_body,
    http_exception_handler,
    problem_handler,
)
from choreograph.gateway.publish import read_body
from choreograph.sdk.asgi import (
    MAX_DELIVERY_BYTES,
    WebhookHost,
    answer_handshake,
    delivery_count,
    outcome_response,
    publish_emitted,
    read_delivered_event,
)
from choreograph.sdk.context import Context
from choreograph.sdk.endpoint import event_key
from choreograph.sdk.remote import GatewayClient, GatewayError
from choreograph.sdk.runner import subscription_spec
from choreograph.sdk.state import State, StateView, Unit
from choreograph.sdk.tracing import TraceContext, child_of

__all__ = ["Ambassador"]

logger = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode


class Ambassador(WebhookHost):
    """The sidecar of one plain service (see the module docstring).

    ``transport`` replaces the network to the service (tests); ``clock`` stamps emitted events.
    """

    def __init__(
        self,
        settings: AmbassadorSettings,
        gateway: GatewayClient,
        *,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.clock: Clock = clock or SystemClock()
        self.service, self.spec = settings.declaration()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        super().__init__()

    @property
    def endpoint_url(self) -> str:
        return f"{self.settings.public_url}/handlers/{self.spec.name}"

    async def _start(self) -> None:
        settings = self.settings
        self._client = await self._stack.enter_async_context(
            httpx.AsyncClient(
                transport=self._transport,
                timeout=settings.service_timeout_seconds,
                trust_env=False,
                follow_redirects=False,
            )
        )
        for topic in sorted({settings.topic, *settings.emits.values()}):
            await self.gateway.ensure_topic(topic)
        for topic in sorted(set(settings.emits.values())):
            await self.gateway.topic_key(topic)
        self._app = Starlette(
            routes=[
                Route("/handlers/{name}", self._deliver, methods=["POST", "OPTIONS"]),
                Route("/publish", self._publish, methods=["POST"]),
                Route("/healthz", self._health, methods=["GET"]),
            ],
            exception_handlers={
                HTTPProblem: problem_handler,
                HTTPException: http_exception_handler,
            },
        )

    async def register(self) -> None:
        """Create or update the webhook subscription (the gateway validates this endpoint
        before it answers); then ``/healthz`` answers 200."""
        topic, name = self.settings.topic, self.settings.subscription
        spec = msgspec.structs.replace(
            subscription_spec(self.service, self.spec, topic),
            destination=WebHookDestination(endpoint_url=self.endpoint_url),
        )
        resource = await self.gateway.put_subscription(topic, name, spec)
        state = resource.get("properties", {}).get("provisioningState")
        if state == "Failed":
            raise GatewayError(
                f"the gateway could not validate {self.endpoint_url} for {topic}/{name}: is the "
                "public URL reachable from the gateway?"
            )
        if state != "Succeeded":
            logger.warning("subscription %s/%s is %s, not yet delivering", topic, name, state)
        self._ready = True

    async def _health(self, request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok" if self._ready else "starting",
                "service": self.settings.name,
                "subscription": f"{self.settings.topic}/{self.settings.subscription}",
                "forwardsTo": self.settings.service_url,
            },
            status_code=200 if self._ready else 503,
        )

    # deliveries --------------------------------------------------------------------------------
    async def _deliver(self, request: Request) -> Response:
        if request.path_params["name"] != self.spec.name:
            raise HTTPProblem(
                404, f"this ambassador has no handler {request.path_params['name']!r}"
            )
        handshake = await answer_handshake(request, subscription=self.settings.subscription)
        if handshake is not None:
            return handshake
        event = await read_delivered_event(request)
        attempt = delivery_count(request) + 1
        trace = child_of(event.traceparent)
        answer = await self._forward(event, attempt, trace)
        if isinstance(answer, Response):
            return answer
        try:
            emitted = self._emitted(event, attempt, trace, answer)
        except (AnswerError, InvalidEventError) as exc:
            logger.warning("%s: the service's answer is refused: %s", self.settings.name, exc)
            return JSONResponse(
                error_body(502, f"the service's answer breaks the contract: {exc}"),
                status_code=502,
            )
        try:
            await publish_emitted(self.gateway, emitted)
        except GatewayError as exc:
            logger.warning(
                "%s: next events not published, the bus will retry: %s", self.settings.name, exc
            )
            message = f"the service's events could not be published: {exc}"
            return JSONResponse(error_body(503, message), status_code=503)
        return Response(status_code=200)

    async def _forward(
        self, event: CloudEvent, attempt: int, trace: TraceContext
    ) -> list[NextEvent] | Response:
        """Send the event to the service: the events it answered with, or the answer to the bus."""
        assert self._client is not None
        headers = {"Content-Type": "application/json", "traceparent": trace.traceparent}
        tracestate = event.extensions.get("tracestate")
        if isinstance(tracestate, str) and trace.continued:
            headers["tracestate"] = tracestate
        url = self.settings.service_url
        try:
            response = await self._client.post(
                url, content=_encode(service_request(event, attempt)), headers=headers
            )
        except httpx.TimeoutException:
            message = (
                f"the service did not answer within {self.settings.service_timeout_seconds:g} s"
            )
            return JSONResponse(error_body(503, message), status_code=503)
        except httpx.TransportError as exc:
            message = f"cannot reach the service at {url}: {type(exc).__name__}"
            return JSONResponse(error_body(503, message), status_code=503)
        if 200 <= response.status_code < 300:
            try:
                return parse_answer(response.content, self.settings.emits)
            except AnswerError as exc:
                message = f"the service's answer breaks the contract: {exc}"
                return JSONResponse(error_body(502, message), status_code=502)
        outcome = outcome_of_status(
            response.status_code, response.text, response.headers.get("Retry-After")
        )
        logger.info(
            "%s answered %d for event %s", self.settings.name, response.status_code, event.id
        )
        return outcome_response(outcome)

    def _emitted(
        self, event: CloudEvent, attempt: int, trace: TraceContext, answer: list[NextEvent]
    ) -> list[tuple[str, CloudEvent]]:
        """The answer's events, built as the SDK builds a handler's (same ids on a retry)."""
        context = Context(
            service=self.service.name,
            handler=self.spec.name,
            event=event,
            attempt=attempt,
            state=StateView(State(), Unit()),
            trace=trace,
            emits=self.spec.emits,
            clock=self.clock,
            cause=event_key(event),
        )
        for item in answer:
            context.emit(item.type, item.data, subject=item.subject)
        for _, emitted in context.emitted:
            encode_event(emitted)  # refuse what the gateway would refuse, with the reason
        return context.emitted

    # publishing for the service ----------------------------------------------------------------
    async def _publish(self, request: Request) -> Response:
        emits = self.settings.emits
        try:
            wanted = parse_publish(await read_body(request, MAX_DELIVERY_BYTES), emits)
        except AnswerError as exc:
            raise HTTPProblem(400, str(exc), code="InvalidEvent") from exc
        item = wanted.event
        event_id = wanted.id or str(uuid.uuid4())
        trace = child_of(request.headers.get("traceparent"))
        extensions: dict[str, ExtensionValue] = {
            "correlationid": wanted.correlation_id or event_id,
            "traceparent": trace.traceparent,
        }
        try:
            event = CloudEvent(
                id=event_id,
                type=item.type,
                source=f"/services/{self.service.name}",
                subject=item.subject,
                time=format_timestamp(self.clock.now()),
                datacontenttype=None if item.data is msgspec.UNSET else "application/json",
                data=item.data,
                extensions=extensions,
            )
            encode_event(event)
        except InvalidEventError as exc:
            raise HTTPProblem(400, str(exc), code="InvalidEvent") from exc
        topic = emits[item.type]
        try:
            await self.gateway.publish(topic, event)
        except GatewayError as exc:
            status = 400 if exc.status is not None and 400 <= exc.status < 500 else 503
            raise HTTPProblem(status, str(exc)) from exc
        body: dict[str, Any] = {
            "id": event.id,
            "topic": topic,
            "correlationId": extensions["correlationid"],
        }
        return JSONResponse(body)
