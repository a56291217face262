"""A deliberately incomplete choreography for ``choreograph graph --services``: an order service
whose failure event nobody compensates, and a consumer of an event nobody emits."""

from __future__ import annotations

from choreograph import CloudEvent
from choreograph.sdk import Context, Service

orders = Service("orders", description="Takes orders.", publishes={"OrderPlaced": "orders"})


@orders.on(
    "OrderPlaced",
    topic="orders",
    emits={"OrderAccepted": "orders", "OrderFailed": "orders"},
)
async def accept(event: CloudEvent, ctx: Context) -> None:
    """Accept an order."""


billing = Service("billing", description="Bills accepted orders.")


@billing.on("OrderAccepted", topic="orders", emits={"InvoiceSent": "invoices"})
async def bill(event: CloudEvent, ctx: Context) -> None:
    """Bill an accepted order."""


@billing.on("PaymentReceived", topic="payments")
async def settle(event: CloudEvent, ctx: Context) -> None:
    """Settle a paid invoice."""


SERVICES = [orders, billing]
