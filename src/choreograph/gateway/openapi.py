"""The gateway's OpenAPI 3 document, written as data (served at ``/openapi.json``).

It describes every route with its parameters, bodies, responses and security, so that clients
can be generated from it and schemathesis can fuzz the gateway with it.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from choreograph.gateway.openapi_schemas import (
    JSON,
    RESPONSES,
    SCHEMAS,
    SECURITY_SCHEMES,
    json_content,
    ref,
)

__all__ = ["openapi_document"]


def _ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, **(json_content(schema) if schema is not None else {})}


def _errors(*statuses: int) -> dict[str, Any]:
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        404: "NotFound",
        409: "Conflict",
        410: "Gone",
        413: "PayloadTooLarge",
        503: "Unavailable",
    }
    return {str(status): {"$ref": f"#/components/responses/{names[status]}"} for status in statuses}


_TOPIC = {
    "name": "topic",
    "in": "path",
    "required": True,
    "description": "Topic name: 3-50 letters, digits and '-'.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9-]{3,50}$", "example": "orders"},
}
_SUBSCRIPTION = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "Subscription name: 3-64 letters, digits and '-'.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9-]{3,64}$", "example": "audit"},
}
_RECORD = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "Dead-letter record id.",
    "schema": {"type": "string"},
}
_API_VERSION = {
    "name": "api-version",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["2018-01-01"]},
}
_ADMIN: Final[list[dict[str, list[str]]]] = [{"adminBearer": []}]
_PUBLISHER: Final[list[dict[str, list[str]]]] = [
    {"sasKey": []},
    {"sasKeyQuery": []},
    {"sasToken": []},
    {"sharedAccessSignature": []},
]

_PUBLISH = {
    "summary": "Publish events (Event Grid data-plane API, CloudEvents 1.0 over HTTP)",
    "description": (
        "An Event Grid-schema topic takes a JSON array of Event Grid events (application/json). "
        "A CloudEvents topic takes structured (application/cloudevents+json), batched "
        "(application/cloudevents-batch+json) or binary-mode (ce-* headers) events. A request "
        "over 1 MB, or an event over 1 MB, is refused with 413; more than 5000 events with 400. "
        "A refused request stores nothing. Success is 200 with an empty body."
    ),
    "security": _PUBLISHER,
    "requestBody": {
        "required": True,
        "content": {
            JSON: {"schema": {"type": "array", "items": ref("EventGridEvent")}},
            "application/cloudevents+json": {"schema": ref("CloudEvent")},
            "application/cloudevents-batch+json": {
                "schema": {"type": "array", "items": ref("CloudEvent")}
            },
        },
    },
    "responses": {
        "200": {"description": "Every event was stored (or de-duplicated); the body is empty."},
        **_errors(400, 401, 404, 413, 503),
    },
}


def _operation(
    summary: str,
    responses: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: str | None = None,
    security: list[dict[str, list[str]]] = _ADMIN,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "security": security, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": False, **json_content(ref(body))}
    return operation


def _paths() -> dict[str, Any]:
    topic, sub, record = [_TOPIC], [_TOPIC, _SUBSCRIPTION], [_TOPIC, _SUBSCRIPTION, _RECORD]
    base = "/management/topics/{topic}"
    subscription = base + "/eventSubscriptions/{name}"
    dead = subscription + "/deadLetters"
    admin = _errors(401, 404)
    return {
        "/topics/{topic}/api/events": {"post": {**_PUBLISH, "parameters": [_TOPIC, _API_VERSION]}},
        "/api/events": {"post": {**_PUBLISH, "parameters": [_API_VERSION]}},
        "/management/topics": {
            "get": _operation("List topics", {"200": _ok("Topics", ref("TopicList")), **admin})
        },
        base: {
            "put": _operation(
                "Create or update a topic",
                {
                    "200": _ok("Updated", ref("Topic")),
                    "201": _ok("Created", ref("Topic")),
                    **_errors(400, 401, 404, 413),
                },
                parameters=topic,
                body="TopicRequest",
            ),
            "get": _operation(
                "Read a topic",
                {"200": _ok("The topic", ref("Topic")), **_errors(400, 401, 404)},
                parameters=topic,
            ),
            "delete": _operation(
                "Delete a topic with its subscriptions, queued events and dead letters",
                {"200": _ok("Deleted"), **_errors(400, 401, 404)},
                parameters=topic,
            ),
        },
        base + "/listKeys": {
            "post": _operation(
                "The topic's access keys",
                {"200": _ok("Keys", ref("Keys")), **_errors(400, 401, 404)},
                parameters=topic,
            )
        },
        base + "/regenerateKey": {
            "post": _operation(
                "Replace key1 or key2",
                {"200": _ok("Keys", ref("Keys")), **_errors(400, 401, 404, 413)},
                parameters=topic,
                body="RegenerateKeyRequest",
            )
        },
        base + "/eventSubscriptions": {
            "get": _operation(
                "List a topic's subscriptions",
                {"200": _ok("Subscriptions", ref("SubscriptionList")), **_errors(400, 401, 404)},
                parameters=topic,
            )
        },
        subscription: {
            "put": _operation(
                "Create or update a subscription (a webhook is validated first)",
                {
                    "200": _ok("Updated", ref("Subscription")),
                    "201": _ok("Created", ref("Subscription")),
                    **_errors(400, 401, 404, 413),
                },
                parameters=sub,
                body="SubscriptionRequest",
            ),
            "get": _operation(
                "Read a subscription",
                {"200": _ok("The subscription", ref("Subscription")), **_errors(400, 401, 404)},
                parameters=sub,
            ),
            "delete": _operation(
                "Delete a subscription with its queued events and dead letters",
                {"200": _ok("Deleted"), **_errors(400, 401, 404)},
                parameters=sub,
            ),
        },
        subscription + "/getFullUrl": {
            "post": _operation(
                "The webhook's full endpoint URL, query included",
                {
                    "200": _ok(
                        "URL",
                        {
                            "type": "object",
                            "required": ["endpointUrl"],
                            "properties": {"endpointUrl": {"type": "string"}},
                        },
                    ),
                    **_errors(400, 401, 404),
                },
                parameters=sub,
            )
        },
        dead: {
            "get": _operation(
                "List dead letters, oldest first",
                {"200": _ok("A page", ref("DeadLetterList")), **_errors(400, 401, 404)},
                parameters=[
                    *sub,
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                    },
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                ],
            ),
            "delete": _operation(
                "Purge every dead letter",
                {"200": _ok("Purged", ref("Purged")), **_errors(400, 401, 404)},
                parameters=sub,
            ),
        },
        dead + "/redrive": {
            "post": _operation(
                "Send dead letters back to the subscription (those named, or all)",
                {"200": _ok("Redriven", ref("Redriven")), **_errors(400, 401, 404, 413)},
                parameters=sub,
                body="RedriveRequest",
            )
        },
        dead + "/{id}": {
            "get": _operation(
                "Read a dead letter",
                {"200": _ok("The record", ref("DeadLetter")), **_errors(400, 401, 404)},
                parameters=record,
            ),
            "delete": _operation(
                "Purge a dead letter",
                {"200": _ok("Purged", ref("Purged")), **_errors(400, 401, 404)},
                parameters=record,
            ),
        },
        "/validate/{topic}/{subscription}": {
            "get": {
                "summary": "A webhook's validationUrl (manual validation of a subscription)",
                "description": "Served when the gateway validates webhooks: a GET within the "
                "window activates the subscription whose handshake was answered without the code.",
                "security": [],
                "parameters": [
                    _TOPIC,
                    {**_SUBSCRIPTION, "name": "subscription"},
                    {"name": "code", "in": "query", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _ok(
                        "Validated",
                        {
                            "type": "object",
                            "required": ["provisioningState"],
                            "properties": {"provisioningState": {"type": "string"}},
                        },
                    ),
                    **_errors(400, 404, 410),
                },
            }
        },
        "/healthz": {
            "get": _operation(
                "Health",
                {
                    "200": _ok("Serving", ref("Health")),
                    "503": _ok("The bus is unavailable", ref("Health")),
                },
                security=[],
            )
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format 0.0.4)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": _operation(
                "This document", {"200": _ok("OpenAPI 3", {"type": "object"})}, security=[]
            )
        },
    }


_DOCUMENT: Final = {
    "openapi": "3.0.3",
    "info": {
        "title": "choreograph gateway",
        "version": "1",
        "description": "Event Grid-style publish and management API of a choreograph bus.",
    },
    "paths": _paths(),
    "components": {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        "securitySchemes": SECURITY_SCHEMES,
    },
}


def openapi_document() -> dict[str, Any]:
    """A copy of the OpenAPI document (callers may change it)."""
    return copy.deepcopy(_DOCUMENT)
