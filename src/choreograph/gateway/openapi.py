"""The gateway's OpenAPI 3 document, written as data (served at ``/openapi.json``).

It describes every route with its parameters, bodies, responses and security, so that clients
can be generated from it and schemathesis can fuzz the gateway with it.
"""

from __future__ import annotations

import copy
from typing import Any, Final

__all__ = ["openapi_document"]

_JSON: Final = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {_JSON: {"schema": schema}}}


def _ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, **(_json(schema) if schema is not None else {})}


def _errors(*statuses: int) -> dict[str, Any]:
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        404: "NotFound",
        409: "Conflict",
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
            _JSON: {"schema": {"type": "array", "items": _ref("EventGridEvent")}},
            "application/cloudevents+json": {"schema": _ref("CloudEvent")},
            "application/cloudevents-batch+json": {
                "schema": {"type": "array", "items": _ref("CloudEvent")}
            },
        },
    },
    "responses": {
        "200": {"description": "Every event was stored (or de-duplicated); the body is empty."},
        **_errors(400, 401, 404, 413, 503),
    },
}

_RESOURCE_IDENTITY: Final = {
    "id": {"type": "string"},
    "name": {"type": "string"},
    "type": {"type": "string"},
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "target": {"type": "string"},
                            },
                        },
                    },
                },
            }
        },
    },
    "EventGridEvent": {
        "type": "object",
        "required": ["id", "subject", "eventType", "eventTime"],
        "properties": {
            "id": {"type": "string", "minLength": 1},
            "subject": {"type": "string"},
            "eventType": {"type": "string", "minLength": 1},
            "eventTime": {"type": "string", "format": "date-time"},
            "data": {},
            "dataVersion": {"type": "string"},
            "metadataVersion": {"type": "string", "enum": ["1"]},
            "topic": {"type": "string"},
        },
        "additionalProperties": False,
    },
    "CloudEvent": {
        "type": "object",
        "required": ["specversion", "id", "source", "type"],
        "properties": {
            "specversion": {"type": "string", "enum": ["1.0"]},
            "id": {"type": "string", "minLength": 1},
            "source": {"type": "string", "minLength": 1},
            "type": {"type": "string", "minLength": 1},
            "subject": {"type": "string", "minLength": 1},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"type": "string", "minLength": 1},
            "dataschema": {"type": "string", "minLength": 1},
            "data": {},
            "data_base64": {"type": "string", "format": "byte"},
        },
        "additionalProperties": {
            "anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "boolean"}]
        },
    },
    "TopicProperties": {
        "type": "object",
        "properties": {
            "inputSchema": {"type": "string", "enum": ["CloudEventSchemaV1_0", "EventGridSchema"]},
            "deduplicationWindowSeconds": {"type": "number", "minimum": 0, "maximum": 86400},
        },
        "additionalProperties": False,
    },
    "TopicRequest": {
        "type": "object",
        "description": "id, name and type are read back from a GET and ignored (name must be "
        "the name in the URL).",
        "properties": {**_RESOURCE_IDENTITY, "properties": _ref("TopicProperties")},
        "additionalProperties": False,
    },
    "Topic": {
        "type": "object",
        "required": ["id", "name", "type", "properties"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "type": {"type": "string", "enum": ["Microsoft.EventGrid/topics"]},
            "properties": {
                "type": "object",
                "required": ["inputSchema", "endpoint", "provisioningState"],
                "properties": {
                    "inputSchema": {"type": "string"},
                    "deduplicationWindowSeconds": {"type": "number"},
                    "endpoint": {"type": "string"},
                    "provisioningState": {"type": "string"},
                },
            },
        },
    },
    "TopicList": {
        "type": "object",
        "required": ["value"],
        "properties": {"value": {"type": "array", "items": _ref("Topic")}},
    },
    "Keys": {
        "type": "object",
        "required": ["key1", "key2"],
        "properties": {"key1": {"type": "string"}, "key2": {"type": "string"}},
    },
    "RegenerateKeyRequest": {
        "type": "object",
        "required": ["keyName"],
        "properties": {"keyName": {"type": "string", "enum": ["key1", "key2"]}},
        "additionalProperties": False,
    },
    "Destination": {
        "type": "object",
        "required": ["endpointType"],
        "properties": {
            "endpointType": {"type": "string", "enum": ["WebHook", "InProcess"]},
            "properties": {
                "type": "object",
                "properties": {
                    "endpointUrl": {"type": "string", "pattern": "^https?://[^/\\s]+"},
                    "maxEventsPerBatch": {"type": "integer", "minimum": 1, "maximum": 5000},
                    "preferredBatchSizeInKilobytes": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 1024,
                    },
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    "RetryPolicy": {
        "type": "object",
        "properties": {
            "maxDeliveryAttempts": {"type": "integer", "minimum": 1, "maximum": 30},
            "eventTimeToLiveInMinutes": {"type": "integer", "minimum": 1, "maximum": 1440},
            "backoffSeconds": {
                "type": "array",
                "minItems": 1,
                "maxItems": 30,
                "items": {"type": "number", "minimum": 0, "maximum": 86400},
            },
            "nonRetryableStatusCodes": {
                "type": "array",
                "items": {"type": "integer", "minimum": 300, "maximum": 599},
            },
        },
        "additionalProperties": False,
    },
    "SubscriptionProperties": {
        "type": "object",
        "properties": {
            "destination": _ref("Destination"),
            "filter": {
                "type": "object",
                "description": "Event Grid's filter: includedEventTypes, subjectBeginsWith, "
                "subjectEndsWith, isSubjectCaseSensitive, advancedFilters, "
                "enableAdvancedFilteringOnArrays.",
            },
            "retryPolicy": _ref("RetryPolicy"),
            "deliveryTimeoutSeconds": {
                "type": "number",
                "minimum": 0,
                "exclusiveMinimum": True,
                "maximum": 3600,
            },
            "eventDeliverySchema": {
                "type": "string",
                "enum": ["CloudEventSchemaV1_0", "EventGridSchema"],
            },
            "deadLetterEnabled": {"type": "boolean"},
            "maxConcurrentDeliveries": {"type": "integer", "minimum": 1, "maximum": 1000},
        },
        "additionalProperties": False,
    },
    "SubscriptionRequest": {
        "type": "object",
        "description": "id, name and type are read back from a GET and ignored (name must be "
        "the name in the URL).",
        "properties": {**_RESOURCE_IDENTITY, "properties": _ref("SubscriptionProperties")},
        "additionalProperties": False,
    },
    "Subscription": {
        "type": "object",
        "required": ["id", "name", "type", "properties"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "type": {"type": "string", "enum": ["Microsoft.EventGrid/eventSubscriptions"]},
            "properties": {
                "type": "object",
                "required": ["topic", "destination", "provisioningState"],
                "properties": {
                    "topic": {"type": "string"},
                    "destination": {"type": "object"},
                    "provisioningState": {
                        "type": "string",
                        "enum": ["Succeeded", "AwaitingManualAction", "Failed", "Creating"],
                    },
                },
            },
        },
    },
    "SubscriptionList": {
        "type": "object",
        "required": ["value"],
        "properties": {"value": {"type": "array", "items": _ref("Subscription")}},
    },
    "DeadLetter": {
        "type": "object",
        "description": "The event in the subscription's delivery schema plus deadLetterReason, "
        "deliveryAttempts, lastDeliveryOutcome, publishTime, lastDeliveryAttemptTime and the "
        "record id deadLetterId (all lower-case in the CloudEvents schema).",
        "additionalProperties": True,
    },
    "DeadLetterList": {
        "type": "object",
        "required": ["value"],
        "properties": {
            "value": {"type": "array", "items": _ref("DeadLetter")},
            "nextLink": {"type": "string"},
        },
    },
    "RedriveRequest": {
        "type": "object",
        "properties": {"ids": {"type": "array", "items": {"type": "string"}}},
        "additionalProperties": False,
    },
    "Redriven": {
        "type": "object",
        "required": ["redriven"],
        "properties": {"redriven": {"type": "integer", "minimum": 0}},
    },
    "Purged": {
        "type": "object",
        "required": ["purged"],
        "properties": {"purged": {"type": "integer", "minimum": 0}},
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok", "unavailable"]}},
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
        operation["requestBody"] = {"required": False, **_json(_ref(body))}
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
            "get": _operation("List topics", {"200": _ok("Topics", _ref("TopicList")), **admin})
        },
        base: {
            "put": _operation(
                "Create or update a topic",
                {
                    "200": _ok("Updated", _ref("Topic")),
                    "201": _ok("Created", _ref("Topic")),
                    **_errors(400, 401, 404, 413),
                },
                parameters=topic,
                body="TopicRequest",
            ),
            "get": _operation(
                "Read a topic",
                {"200": _ok("The topic", _ref("Topic")), **_errors(400, 401, 404)},
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
                {"200": _ok("Keys", _ref("Keys")), **_errors(400, 401, 404)},
                parameters=topic,
            )
        },
        base + "/regenerateKey": {
            "post": _operation(
                "Replace key1 or key2",
                {"200": _ok("Keys", _ref("Keys")), **_errors(400, 401, 404, 413)},
                parameters=topic,
                body="RegenerateKeyRequest",
            )
        },
        base + "/eventSubscriptions": {
            "get": _operation(
                "List a topic's subscriptions",
                {"200": _ok("Subscriptions", _ref("SubscriptionList")), **_errors(400, 401, 404)},
                parameters=topic,
            )
        },
        subscription: {
            "put": _operation(
                "Create or update a subscription (a webhook is validated first)",
                {
                    "200": _ok("Updated", _ref("Subscription")),
                    "201": _ok("Created", _ref("Subscription")),
                    **_errors(400, 401, 404, 413),
                },
                parameters=sub,
                body="SubscriptionRequest",
            ),
            "get": _operation(
                "Read a subscription",
                {"200": _ok("The subscription", _ref("Subscription")), **_errors(400, 401, 404)},
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
                {"200": _ok("A page", _ref("DeadLetterList")), **_errors(400, 401, 404)},
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
                {"200": _ok("Purged", _ref("Purged")), **_errors(400, 401, 404)},
                parameters=sub,
            ),
        },
        dead + "/redrive": {
            "post": _operation(
                "Send dead letters back to the subscription (those named, or all)",
                {"200": _ok("Redriven", _ref("Redriven")), **_errors(400, 401, 404, 413)},
                parameters=sub,
                body="RedriveRequest",
            )
        },
        dead + "/{id}": {
            "get": _operation(
                "Read a dead letter",
                {"200": _ok("The record", _ref("DeadLetter")), **_errors(400, 401, 404)},
                parameters=record,
            ),
            "delete": _operation(
                "Purge a dead letter",
                {"200": _ok("Purged", _ref("Purged")), **_errors(400, 401, 404)},
                parameters=record,
            ),
        },
        "/healthz": {
            "get": _operation(
                "Health",
                {
                    "200": _ok("Serving", _ref("Health")),
                    "503": _ok("The bus is unavailable", _ref("Health")),
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


def _responses() -> dict[str, Any]:
    texts = {
        "BadRequest": "Invalid request; nothing was changed.",
        "Unauthorized": "Missing or invalid credentials.",
        "NotFound": "No such topic, subscription, record or route.",
        "Conflict": "The resource already exists.",
        "PayloadTooLarge": "The request or an event is over 1 MB.",
        "Unavailable": "The bus is unavailable.",
    }
    return {name: {"description": text, **_json(_ref("Error"))} for name, text in texts.items()}


_DOCUMENT: Final = {
    "openapi": "3.0.3",
    "info": {
        "title": "choreograph gateway",
        "version": "1",
        "description": "Event Grid-style publish and management API of a choreograph bus.",
    },
    "paths": _paths(),
    "components": {
        "schemas": _SCHEMAS,
        "responses": _responses(),
        "securitySchemes": {
            "adminBearer": {"type": "http", "scheme": "bearer"},
            "sasKey": {"type": "apiKey", "in": "header", "name": "aeg-sas-key"},
            "sasKeyQuery": {"type": "apiKey", "in": "query", "name": "aeg-sas-key"},
            "sasToken": {"type": "apiKey", "in": "header", "name": "aeg-sas-token"},
            "sharedAccessSignature": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "SharedAccessSignature r=<resource>&e=<expiry>&s=<signature>",
            },
        },
    },
}


def openapi_document() -> dict[str, Any]:
    """A copy of the OpenAPI document (callers may change it)."""
    return copy.deepcopy(_DOCUMENT)
