"""The workflow graph, derived from what services declare they consume and emit.

Nodes are services (and the bus and monitor, which emit events of their own); an edge says "an
event of this type, emitted by A on this topic, is consumed by B". The graph also points out
what looks wrong in a choreography: event types emitted but consumed by no one, consumed but
emitted by no one, and failure events (``*Failed``, ``*TimedOut``, ``*Rejected``,
``Choreograph.DeadLettered``) that no service reacts to, i.e. failures with no compensator.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Edge", "Graph", "is_failure_event", "to_dot", "to_mermaid", "workflow_graph"]

_FAILURE = re.compile(r".*(Failed|TimedOut|Rejected)$|^Choreograph\.DeadLettered$")


def is_failure_event(event_type: str) -> bool:
    """Whether an event type names a failure that someone should compensate."""
    return _FAILURE.match(event_type) is not None


@dataclass(frozen=True, order=True)
class Edge:
    """``source`` emits ``event_type`` on ``topic``; ``target`` consumes it (handler ``handler``)."""

    source: str
    target: str
    event_type: str
    topic: str
    handler: str


@dataclass
class Graph:
    """Services, the edges between them, and the warnings about the choreography."""

    services: list[str] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def workflow_graph(declarations: Iterable[Mapping[str, Any]]) -> Graph:
    """Build the graph of ``Service.declaration()`` dicts.

    A declaration may list, beside its handlers, ``publishes``: the events it publishes outside
    handlers (an HTTP API, a timer), as ``[{"type", "topic"}]``.
    """
    emitters: dict[tuple[str, str], set[str]] = {}
    consumers: dict[tuple[str, str], list[tuple[str, str]]] = {}
    graph = Graph()
    for declaration in declarations:
        service = str(declaration["service"])
        graph.services.append(service)
        for item in declaration.get("publishes", ()):
            emitters.setdefault((item["type"], item["topic"]), set()).add(service)
        for handler in declaration.get("handlers", ()):
            for item in handler.get("emits", ()):
                emitters.setdefault((item["type"], item["topic"]), set()).add(service)
            for item in handler.get("consumes", ()):
                consumers.setdefault((item["type"], item["topic"]), []).append(
                    (service, handler["name"])
                )
    for (event_type, topic), targets in sorted(consumers.items()):
        sources = emitters.get((event_type, topic))
        if not sources:
            graph.warnings.append(
                f"{event_type} on {topic} is consumed by "
                f"{_names(f'{s}.{h}' for s, h in targets)} but emitted by no one"
            )
            sources = {"?"}
        for source in sorted(sources):
            for target, handler in targets:
                graph.edges.append(Edge(source, target, event_type, topic, handler))
    for (event_type, topic), sources in sorted(emitters.items()):
        if (event_type, topic) in consumers:
            continue
        what = "failure event" if is_failure_event(event_type) else "event"
        consequence = " (no compensator)" if is_failure_event(event_type) else ""
        graph.warnings.append(
            f"{what} {event_type} on {topic}, emitted by {_names(sources)}, is consumed by no "
            f"one{consequence}"
        )
    graph.edges.sort()
    return graph


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(set(names)))


def _node_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def to_mermaid(graph: Graph) -> str:
    """A Mermaid ``flowchart``: failure edges dashed, labelled with the event type."""
    lines = ["flowchart LR"]
    nodes = sorted({*graph.services, *(e.source for e in graph.edges)})
    lines.extend(f'    {_node_id(name)}["{name}"]' for name in nodes)
    for edge in _merged(graph.edges):
        arrow = "-.->" if is_failure_event(edge[2]) else "-->"
        lines.append(f'    {_node_id(edge[0])} {arrow}|"{edge[2]}"| {_node_id(edge[1])}')
    return "\n".join(lines) + "\n"


def to_dot(graph: Graph) -> str:
    """A Graphviz ``digraph``: failure edges dashed and red."""
    lines = ["digraph choreography {", "    rankdir=LR;", "    node [shape=box];"]
    nodes = sorted({*graph.services, *(e.source for e in graph.edges)})
    lines.extend(f'    "{name}";' for name in nodes)
    for source, target, label in _merged(graph.edges):
        style = ' style=dashed color="#c0392b"' if is_failure_event(label) else ""
        lines.append(f'    "{source}" -> "{target}" [label="{label}"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _merged(edges: Sequence[Edge]) -> list[tuple[str, str, str]]:
    """One arrow per (source, target, event type), whatever handlers share it."""
    return sorted({(edge.source, edge.target, edge.event_type) for edge in edges})
