"""The component schemas and shared responses of the gateway's OpenAPI document (as data)."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["JSON", "RESPONSES", "SCHEMAS", "SECURITY_SCHEMES", "json_content", "ref"]

JSON: Final = "application/json"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {JSON: {"schema": schema}}}


_RESOURCE_IDENTITY: Final = {
    "id": {"type": "string"},
    "name": {"type": "string"},
    "type": {"type": "string"},
}

SCHEMAS: Final[dict[str, Any]] = {
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
        "properties": {**_RESOURCE_IDENTITY, "properties": ref("TopicProperties")},
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
        "properties": {"value": {"type": "array", "items": ref("Topic")}},
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
            "destination": ref("Destination"),
            "filter": {
                "type": "object",
                "description": "Event Grid's filter: includedEventTypes, subjectBeginsWith, "
                "subjectEndsWith, isSubjectCaseSensitive, advancedFilters, "
                "enableAdvancedFilteringOnArrays.",
            },
            "retryPolicy": ref("RetryPolicy"),
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
        "properties": {**_RESOURCE_IDENTITY, "properties": ref("SubscriptionProperties")},
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
        "properties": {"value": {"type": "array", "items": ref("Subscription")}},
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
            "value": {"type": "array", "items": ref("DeadLetter")},
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


def _responses() -> dict[str, Any]:
    texts = {
        "BadRequest": "Invalid request; nothing was changed.",
        "Unauthorized": "Missing or invalid credentials.",
        "NotFound": "No such topic, subscription, record or route.",
        "Conflict": "The resource already exists.",
        "Gone": "The validation URL has expired.",
        "PayloadTooLarge": "The request or an event is over 1 MB.",
        "Unavailable": "The bus is unavailable.",
    }
    return {
        name: {"description": text, **json_content(ref("Error"))} for name, text in texts.items()
    }


RESPONSES: Final = _responses()

SECURITY_SCHEMES: Final = {
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
}
