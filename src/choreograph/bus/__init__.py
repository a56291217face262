"""The Event-Grid-style bus: topics, subscriptions, filters, retry policy, dispatch, dead letters."""

from choreograph.bus.bus import Bus
from choreograph.bus.deadletter import DEAD_LETTERED_EVENT_TYPE, DeadLetter
from choreograph.bus.endpoint import Attempt, Endpoint, Handler, HandlerEndpoint
from choreograph.bus.filters import AdvancedFilter, EventFilter
from choreograph.bus.retry import DeadLetterReason, Outcome
from choreograph.bus.subscription import (
    InProcessDestination,
    RetryPolicy,
    SubscriptionRecord,
    SubscriptionSpec,
    WebHookDestination,
)
from choreograph.bus.topic import SYSTEM_TOPIC, TopicRecord, TopicSpec

__all__ = [
    "DEAD_LETTERED_EVENT_TYPE",
    "SYSTEM_TOPIC",
    "AdvancedFilter",
    "Attempt",
    "Bus",
    "DeadLetter",
    "DeadLetterReason",
    "Endpoint",
    "EventFilter",
    "Handler",
    "HandlerEndpoint",
    "InProcessDestination",
    "Outcome",
    "RetryPolicy",
    "SubscriptionRecord",
    "SubscriptionSpec",
    "TopicRecord",
    "TopicSpec",
    "WebHookDestination",
]
