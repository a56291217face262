"""``choreograph graph``: the workflow drawn from the services' declarations, in Mermaid or DOT,
with warnings about loose ends on stderr."""

from __future__ import annotations

import re

import pytest
from cli_helpers import assert_one_line_error, invoke, lines
from typer.testing import CliRunner

from choreograph import DEAD_LETTERED_EVENT_TYPE
from drone_delivery.events import FAILURE_TYPES

SERVICES = ("ingestion", "package", "scheduler", "delivery")
FAILURES = {*FAILURE_TYPES, DEAD_LETTERED_EVENT_TYPE}
HAPPY_PATH = (
    ("ingestion", "DeliveryRequested", "package"),
    ("package", "PackageCreated", "scheduler"),
    ("scheduler", "DroneAssigned", "delivery"),
    ("delivery", "DeliveryScheduled", "ingestion"),
)
COMPENSATIONS = (
    ("scheduler", "DroneAssignmentFailed", "package"),
    ("delivery", "DeliverySchedulingFailed", "scheduler"),
    ("monitor", "DroneDeliveryTimedOut", "package"),
    ("bus", DEAD_LETTERED_EVENT_TYPE, "scheduler"),
)
MERMAID_EDGE = re.compile(r'^ {4}(\w+) (-->|-\.->)\|"([^"]+)"\| (\w+)$')
DOT_EDGE = re.compile(r'^ {4}"([^"]+)" -> "([^"]+)" \[label="([^"]+)"(.*)\];$')
LOOSE_ENDS = "tests.cli.loose_ends:SERVICES"


def test_graph_prints_a_mermaid_flowchart_of_drone_delivery(runner: CliRunner) -> None:
    result = invoke(runner, "graph")

    assert result.exit_code == 0, result.output
    drawn = result.stdout.splitlines()
    assert drawn[0] == "flowchart LR"
    for service in SERVICES:
        assert f'    {service}["{service}"]' in drawn
    edges = {}
    for line in drawn[1:]:
        if match := MERMAID_EDGE.match(line):
            source, arrow, event_type, target = match.groups()
            edges[source, event_type, target] = arrow
    assert all(edges.get(edge) == "-->" for edge in HAPPY_PATH), edges
    assert all(edges.get(edge) == "-.->" for edge in COMPENSATIONS), edges
    # Failure edges, and only they, are dashed.
    assert {key[1] for key, arrow in edges.items() if arrow == "-.->"} <= FAILURES
    assert {key[1] for key, arrow in edges.items() if arrow == "-->"}.isdisjoint(FAILURES)
    assert result.stderr == ""


def test_graph_in_dot_prints_a_digraph_with_dashed_failure_edges(runner: CliRunner) -> None:
    result = invoke(runner, "graph", "--format", "dot")

    assert result.exit_code == 0, result.output
    drawn = result.stdout.splitlines()
    assert drawn[0] == "digraph choreography {"
    assert drawn[-1] == "}"
    for service in SERVICES:
        assert f'    "{service}";' in drawn
    edges = {}
    for line in drawn:
        if match := DOT_EDGE.match(line):
            source, target, event_type, attributes = match.groups()
            edges[source, event_type, target] = "style=dashed" in attributes
    assert all(edges.get(edge) is False for edge in HAPPY_PATH), edges
    assert all(edges.get(edge) is True for edge in COMPENSATIONS), edges
    assert all(dashed == (key[1] in FAILURES) for key, dashed in edges.items()), edges


def test_drone_delivery_has_no_loose_ends_so_strict_passes(runner: CliRunner) -> None:
    result = invoke(runner, "graph", "--strict")

    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""


def test_loose_ends_are_warned_about_on_stderr_only(runner: CliRunner) -> None:
    result = invoke(runner, "graph", "--services", LOOSE_ENDS)

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("flowchart LR\n")
    assert "warning" not in result.stdout
    warnings = lines(result.stderr)
    assert all(line.startswith("warning: ") for line in warnings), warnings
    assert len(warnings) == 3, warnings
    assert any("PaymentReceived" in line and "emitted by no one" in line for line in warnings)
    assert any("InvoiceSent" in line and "consumed by no one" in line for line in warnings)
    assert any("OrderFailed" in line and "no compensator" in line for line in warnings)


@pytest.mark.parametrize("output", ["mermaid", "dot"])
def test_strict_exits_1_when_there_are_warnings(runner: CliRunner, output: str) -> None:
    result = invoke(runner, "graph", "--services", LOOSE_ENDS, "--format", output, "--strict")

    assert result.exit_code == 1
    assert "billing" in result.stdout  # the graph is still drawn
    assert len(lines(result.stderr)) == 3


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("tests.cli.no_such_module:SERVICES", "cannot import"),
        ("tests.cli.loose_ends", "must look like package.module:attribute"),
        ("tests.cli.loose_ends:MISSING", "has no attribute 'MISSING'"),
        ("tests.cli.loose_ends:orders.name", "has no attribute"),
        ("drone_delivery.system:SERVICE_NAMES", "must give Services or declarations"),
    ],
)
def test_a_bad_services_reference_is_a_one_line_error(
    runner: CliRunner, reference: str, message: str
) -> None:
    result = invoke(runner, "graph", "--services", reference)

    assert message in assert_one_line_error(result, 2)
    assert result.stdout == ""
