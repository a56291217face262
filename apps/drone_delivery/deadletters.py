"""A service's own dead letters, read from the bus's ``Choreograph.DeadLettered`` events.

When the bus gives up on a forward step (retries exhausted, or the event rejected), it announces
the dead letter on the system topic; the service that owns the subscription turns it into its
business failure event (``DroneAssignmentFailed``...), which the other services compensate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from choreograph import AdvancedFilter, CloudEvent, EventFilter

__all__ = ["DeadLetterNotice", "dead_letter_filter"]


def dead_letter_filter(subscriptions: Sequence[str]) -> EventFilter:
    """Only the ``Choreograph.DeadLettered`` events of these subscriptions."""
    return EventFilter(
        advanced_filters=(
            AdvancedFilter(
                operator_type="StringIn", key="data.subscription", values=list(subscriptions)
            ),
        )
    )


@dataclass(frozen=True, kw_only=True)
class DeadLetterNotice:
    """What a ``Choreograph.DeadLettered`` event says about a delivery's event."""

    subscription: str
    delivery_id: str
    event_type: str
    event_data: dict[str, Any]
    attempts: int
    reason: str
    """The bus's reason (``MaxDeliveryAttemptsExceeded``, ``Rejected``...)."""
    error: str
    """The last failure of the handler, or the bus's reason when there is none."""

    @classmethod
    def from_event(cls, event: CloudEvent) -> DeadLetterNotice:
        data: Any = event.data if isinstance(event.data, dict) else {}
        original: Any = data.get("event") if isinstance(data.get("event"), dict) else {}
        event_data: Any = original.get("data") if isinstance(original.get("data"), dict) else {}
        delivery_id = event_data.get("deliveryId")
        if not isinstance(delivery_id, str) or not delivery_id:
            delivery_id = original.get("correlationid") or event.correlationid or event.id
        attempts = data.get("deliveryAttempts")
        reason = str(data.get("reason") or "dead-lettered")
        return cls(
            subscription=str(data.get("subscription", "")),
            delivery_id=str(delivery_id),
            event_type=str(original.get("type", "")),
            event_data=dict(event_data),
            attempts=attempts if isinstance(attempts, int) else 0,
            reason=reason,
            error=str(data.get("lastDeliveryError") or reason),
        )

    def describe(self, step: str) -> str:
        """A reason for the client: what failed, how often, and the last error."""
        tries = "once" if self.attempts == 1 else f"after {self.attempts} attempts"
        return f"{step} failed {tries}: {self.error}"
