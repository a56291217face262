"""The workflow graph drawn from the services' declarations, and the loose ends it points out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from choreograph.events import CloudEvent
from choreograph.sdk import Context, Service
from choreograph.sdk.graph import Edge, is_failure_event, to_dot, to_mermaid, workflow_graph


async def ignore(event: CloudEvent, ctx: Context) -> None:
    return None


def drone_delivery() -> list[Service]:
    """A small choreography with a compensated failure and a join."""
    ingestion = Service("ingestion", publishes={"Delivery.Requested": "requests"})
    package = Service("package")
    package.on(
        "Delivery.Requested",
        topic="requests",
        emits={"Package.Created": "packages", "Package.Failed": "failures"},
        name="create_package",
    )(ignore)
    package.on("Drone.AssignmentFailed", topic="failures", name="cancel_package")(ignore)
    scheduler = Service("drone-scheduler")
    scheduler.on(
        "Package.Created",
        topic="packages",
        emits={"Drone.Assigned": "drones", "Drone.AssignmentFailed": "failures"},
        name="assign_drone",
    )(ignore)
    delivery = Service("delivery")

    async def start(events: Mapping[str, CloudEvent], ctx: Context) -> None:
        return None

    delivery.join({"Package.Created": "packages", "Drone.Assigned": "drones"}, name="start")(start)
    return [ingestion, package, scheduler, delivery]


def graph_of(services: list[Service], *extra: dict[str, Any]) -> Any:
    return workflow_graph([*(service.declaration() for service in services), *extra])


def test_edges_go_from_the_emitting_service_to_each_consuming_handler() -> None:
    graph = graph_of(drone_delivery())

    assert graph.services == ["ingestion", "package", "drone-scheduler", "delivery"]
    assert graph.edges == sorted(
        [
            Edge("ingestion", "package", "Delivery.Requested", "requests", "create-package"),
            Edge("package", "drone-scheduler", "Package.Created", "packages", "assign-drone"),
            Edge("package", "delivery", "Package.Created", "packages", "start"),
            Edge("drone-scheduler", "delivery", "Drone.Assigned", "drones", "start"),
            Edge(
                "drone-scheduler",
                "package",
                "Drone.AssignmentFailed",
                "failures",
                "cancel-package",
            ),
        ]
    )


def test_a_complete_choreography_has_no_warnings_but_its_uncompensated_failure() -> None:
    graph = graph_of(drone_delivery())
    assert graph.warnings == [
        "failure event Package.Failed on failures, emitted by package, is consumed by no one "
        "(no compensator)"
    ]


def test_an_event_emitted_but_consumed_by_no_one_is_flagged() -> None:
    service = Service("orders")
    service.on("Order.Placed", topic="orders", emits={"Order.Audited": "audit"})(ignore)
    graph = graph_of(
        [service], {"service": "shop", "publishes": [{"type": "Order.Placed", "topic": "orders"}]}
    )
    assert graph.warnings == [
        "event Order.Audited on audit, emitted by orders, is consumed by no one"
    ]


def test_an_event_consumed_but_emitted_by_no_one_is_flagged_with_an_unknown_source() -> None:
    billing, audit = Service("billing"), Service("audit")
    billing.on("Order.Placed", topic="orders", name="bill")(ignore)
    audit.on("Order.Placed", topic="orders", name="record")(ignore)
    graph = graph_of([billing, audit])
    assert graph.warnings == [
        "Order.Placed on orders is consumed by audit.record, billing.bill but emitted by no one"
    ]
    assert graph.edges == [
        Edge("?", "audit", "Order.Placed", "orders", "record"),
        Edge("?", "billing", "Order.Placed", "orders", "bill"),
    ]


def test_an_event_emitted_on_another_topic_than_the_one_consumed_does_not_connect() -> None:
    producer, consumer = Service("producer"), Service("consumer")
    producer.on("Start", topic="start", emits={"Thing.Done": "topic-a"})(ignore)
    consumer.on("Thing.Done", topic="topic-b")(ignore)
    graph = graph_of(
        [producer, consumer], {"service": "x", "publishes": [{"type": "Start", "topic": "start"}]}
    )
    assert [edge for edge in graph.edges if edge.event_type == "Thing.Done"] == [
        Edge("?", "consumer", "Thing.Done", "topic-b", "ignore")
    ]
    assert len(graph.warnings) == 2


def test_publishes_counts_as_emitting() -> None:
    ingestion = Service("ingestion", publishes={"Delivery.Requested": "requests"})
    package = Service("package")
    package.on("Delivery.Requested", topic="requests")(ignore)
    graph = graph_of([ingestion, package])
    assert graph.warnings == []
    assert graph.edges == [Edge("ingestion", "package", "Delivery.Requested", "requests", "ignore")]


@pytest.mark.parametrize(
    ("event_type", "failure"),
    [
        ("Package.Failed", True),
        ("Drone.AssignmentFailed", True),
        ("Delivery.TimedOut", True),
        ("Payment.Rejected", True),
        ("Choreograph.DeadLettered", True),
        ("Package.Created", False),
        ("Failed.Package", False),
        ("Other.DeadLettered", False),
    ],
)
def test_failure_events_are_named_failed_timed_out_rejected_or_dead_lettered(
    event_type: str, failure: bool
) -> None:
    assert is_failure_event(event_type) is failure


@pytest.mark.parametrize(
    "event_type",
    ["Package.Failed", "Delivery.TimedOut", "Payment.Rejected", "Choreograph.DeadLettered"],
)
def test_a_failure_event_with_no_compensator_is_flagged(event_type: str) -> None:
    emitter = {"service": "emitter", "publishes": [{"type": event_type, "topic": "failures"}]}
    graph = workflow_graph([emitter])
    assert graph.warnings == [
        f"failure event {event_type} on failures, emitted by emitter, is consumed by no one "
        "(no compensator)"
    ]


def test_a_compensated_failure_event_is_not_flagged() -> None:
    bus = {
        "service": "bus",
        "publishes": [{"type": "Choreograph.DeadLettered", "topic": "choreograph-system"}],
    }
    compensator = Service("compensator")
    compensator.on("Choreograph.DeadLettered", topic="choreograph-system", name="undo")(ignore)
    graph = graph_of([compensator], bus)
    assert graph.warnings == []
    assert graph.edges == [
        Edge("bus", "compensator", "Choreograph.DeadLettered", "choreograph-system", "undo")
    ]


def test_an_empty_list_of_declarations_is_an_empty_graph() -> None:
    graph = workflow_graph([])
    assert (graph.services, graph.edges, graph.warnings) == ([], [], [])


# --------------------------------------------------------------------------------- rendering


def test_mermaid_draws_a_node_per_service_and_an_arrow_per_event_type() -> None:
    text = to_mermaid(graph_of(drone_delivery()))
    lines = text.splitlines()

    assert text.endswith("\n")
    assert lines[0] == "flowchart LR"
    assert '    drone_scheduler["drone-scheduler"]' in lines
    assert '    ingestion["ingestion"]' in lines
    assert '    ingestion -->|"Delivery.Requested"| package' in lines
    assert '    package -->|"Package.Created"| delivery' in lines
    assert '    package -->|"Package.Created"| drone_scheduler' in lines
    assert '    drone_scheduler -->|"Drone.Assigned"| delivery' in lines
    assert len(lines) == 1 + 4 + 5


def test_mermaid_dashes_failure_arrows() -> None:
    lines = to_mermaid(graph_of(drone_delivery())).splitlines()
    assert '    drone_scheduler -.->|"Drone.AssignmentFailed"| package' in lines
    assert [line for line in lines if "-.->" in line] == [
        '    drone_scheduler -.->|"Drone.AssignmentFailed"| package'
    ]


def test_mermaid_draws_one_arrow_for_handlers_sharing_an_event() -> None:
    emitter = Service("emitter", publishes={"Thing.Done": "things"})
    consumer = Service("consumer")
    consumer.on("Thing.Done", topic="things", name="first")(ignore)
    consumer.on("Thing.Done", topic="things", name="second")(ignore)
    lines = to_mermaid(graph_of([emitter, consumer])).splitlines()
    assert [line for line in lines if "-->" in line] == ['    emitter -->|"Thing.Done"| consumer']


def test_mermaid_draws_the_unknown_source() -> None:
    consumer = Service("consumer")
    consumer.on("Thing.Done", topic="things")(ignore)
    lines = to_mermaid(graph_of([consumer])).splitlines()
    assert '    _["?"]' in lines
    assert '    _ -->|"Thing.Done"| consumer' in lines


def test_dot_draws_a_digraph_with_dashed_red_failure_edges() -> None:
    text = to_dot(graph_of(drone_delivery()))
    lines = text.splitlines()

    assert lines[:3] == ["digraph choreography {", "    rankdir=LR;", "    node [shape=box];"]
    assert lines[-1] == "}"
    assert '    "drone-scheduler";' in lines
    assert '    "ingestion" -> "package" [label="Delivery.Requested"];' in lines
    assert (
        '    "drone-scheduler" -> "package" [label="Drone.AssignmentFailed" style=dashed '
        'color="#c0392b"];'
    ) in lines
    assert [line for line in lines if "style=dashed" in line] == [
        '    "drone-scheduler" -> "package" [label="Drone.AssignmentFailed" style=dashed '
        'color="#c0392b"];'
    ]
