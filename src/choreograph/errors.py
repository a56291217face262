"""The one error tree of choreograph, and the signals a handler raises to steer its delivery.

    ChoreographError
     ├── ConfigError                  a bus URL, option or environment value is invalid
     ├── ValidationError              input refused at a boundary; nothing was stored
     │    ├── InvalidEventError       an event breaks CloudEvents / Event Grid rules
     │    │    └── EventTooLargeError an event or batch exceeds the size limit
     │    ├── InvalidTopicError       a topic name or property is invalid
     │    ├── InvalidSubscriptionError
     │    │    └── InvalidFilterError
     │    └── InvalidDeadLetterQueryError
     ├── NotFoundError
     │    ├── TopicNotFoundError
     │    ├── SubscriptionNotFoundError
     │    └── DeadLetterNotFoundError
     ├── AlreadyExistsError
     ├── BackendError                 the storage engine failed (driver errors chained)
     │    └── BackendLockedError      another process owns the store
     └── BusClosedError               the bus is not open

    HandlerSignal                      not an error: a handler's instruction to the bus
     ├── Retry(delay_seconds)         transient failure; retry on the policy, not before the delay
     └── Reject(reason)               poison event; dead-letter it at once

Validation errors derive from ``ValueError`` and not-found errors from ``LookupError`` too, so
callers that only know the standard library still catch them sensibly.
"""

from __future__ import annotations


class ChoreographError(Exception):
    """Root of every error choreograph raises."""


class ConfigError(ChoreographError, ValueError):
    """A bus URL, an option or an environment value is invalid."""


class ValidationError(ChoreographError, ValueError):
    """Input refused at a boundary. The message names what is wrong; nothing was stored."""


class InvalidEventError(ValidationError):
    """An event breaks a CloudEvents 1.0 or Event Grid schema rule.

    ``attribute`` names the offending attribute (``"specversion"``, ``"data.weight"``...) and
    ``index`` the position of the event in its batch, when it came in one.
    """

    def __init__(self, message: str, *, attribute: str | None = None, index: int | None = None):
        self.attribute = attribute
        self.index = index
        self.rule = message
        prefix = f"event {index}: " if index is not None else ""
        super().__init__(prefix + message)

    def at_index(self, index: int) -> InvalidEventError:
        """The same error, located at ``index`` in a batch."""
        error = type(self)(self.rule, attribute=self.attribute, index=index)
        error.__cause__ = self.__cause__
        return error


class EventTooLargeError(InvalidEventError):
    """An event or a publish request exceeds 1 MB (HTTP 413 at the gateway)."""


class InvalidTopicError(ValidationError):
    """A topic name or topic property is invalid."""


class InvalidSubscriptionError(ValidationError):
    """A subscription name or property is invalid."""


class InvalidFilterError(InvalidSubscriptionError):
    """A subscription filter is invalid or exceeds Event Grid's limits."""


class InvalidDeadLetterQueryError(ValidationError):
    """A dead-letter listing or redrive request is invalid."""


class NotFoundError(ChoreographError, LookupError):
    """A named resource does not exist."""


class TopicNotFoundError(NotFoundError):
    """No topic has that name."""


class SubscriptionNotFoundError(NotFoundError):
    """The topic has no subscription of that name."""


class DeadLetterNotFoundError(NotFoundError):
    """The subscription has no dead-letter record with that id."""


class AlreadyExistsError(ChoreographError):
    """A resource that must be new already exists."""


class BackendError(ChoreographError):
    """The storage engine failed; the driver's exception is chained as ``__cause__``."""


class BackendLockedError(BackendError):
    """Another process owns the store (one bus process per SQLite file)."""


class BusClosedError(ChoreographError):
    """The bus is not open (use ``async with Bus(url) as bus``)."""


class HandlerSignal(Exception):
    """Base of the instructions a handler raises to steer the delivery of its event."""


class Retry(HandlerSignal):
    """Ask the bus to retry this delivery on the subscription's retry policy.

    ``delay_seconds`` is a minimum: the next attempt comes no sooner than this, nor sooner than
    the policy's next step.
    """

    def __init__(self, reason: str = "retry requested", *, delay_seconds: float = 0.0):
        if delay_seconds < 0:
            raise ValueError(f"delay_seconds must be >= 0, got {delay_seconds!r}")
        self.reason = reason
        self.delay_seconds = float(delay_seconds)
        super().__init__(reason)


class Reject(HandlerSignal):
    """Refuse a poison event: it is dead-lettered at once with reason ``Rejected``."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)
