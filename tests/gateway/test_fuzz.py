"""Fuzzing: schemathesis against ``/openapi.json`` and Hypothesis-made publish requests.

The gateway app owns an in-memory bus (``open_bus=True``) and is driven in-process through
schemathesis' ASGI client, which runs the app's lifespan and every request on one event loop.
Properties: no request ever gets a 5xx; every response conforms to the OpenAPI document; a
publish stores exactly the events of the requests answered 200 (a ``probe`` subscription without
a handler keeps them queued, and ``/metrics`` reports its queue); the gateway is healthy after.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import hypothesis.strategies as st
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from choreograph.bus import Bus
from choreograph.gateway import GatewaySettings, create_app, generate_sas_token

ADMIN_TOKEN = "fuzz-tests-admin-token-0123"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EG_TOPIC, CE_TOPIC, MANAGED_TOPIC = "fuzz-eg", "fuzz-ce", "fuzz-managed"
BASE = f"http://{asgi.HOST}"
PUBLISH_STATUSES = {200, 400, 401, 404, 413}
HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Target:
    app: Any
    client: requests.Session
    keys: dict[str, str]

    def queued(self, topic: str) -> int:
        """Events waiting in the topic's probe subscription, read from ``/metrics``."""
        text = self.client.get("/metrics").text
        pattern = (
            rf'choreograph_subscription_queued_events{{topic="{topic}",subscription="probe"}} (\d+)'
        )
        match = re.search(pattern, text)
        assert match is not None, text
        return int(match.group(1))


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    bus = Bus("memory://", retry_jitter=0)
    app = create_app(bus, GatewaySettings(admin_token=ADMIN_TOKEN), open_bus=True)
    keys: dict[str, str] = {}
    with asgi.get_client(app) as client:  # starts the app's lifespan, which opens the bus
        for topic, schema in (
            (EG_TOPIC, "EventGridSchema"),
            (CE_TOPIC, "CloudEventSchemaV1_0"),
            (MANAGED_TOPIC, "EventGridSchema"),
        ):
            body = {"properties": {"inputSchema": schema, "deduplicationWindowSeconds": 0}}
            assert client.put(f"/management/topics/{topic}", json=body, headers=ADMIN).ok
            probe = f"/management/topics/{topic}/eventSubscriptions/probe"
            assert client.put(probe, json={}, headers=ADMIN).ok
            keys[topic] = client.post(f"/management/topics/{topic}/listKeys", headers=ADMIN).json()[
                "key1"
            ]
        yield Target(app, client, keys)
        assert client.get("/healthz").json() == {"status": "ok"}
    asgi.shutdown_lifespans()  # closes the bus


# schemathesis ----------------------------------------------------------------------------------
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _authorize(case: schemathesis.Case, target: Target, credential: str) -> None:
    """Replace generated credentials: a valid one, a wrong one, or none."""
    for name in list(case.headers or {}):
        if name.lower() in ("authorization", "aeg-sas-key", "aeg-sas-token"):
            del case.headers[name]  # type: ignore[union-attr]
    if credential == "none":
        return
    case.headers = case.headers or {}
    if case.path.startswith("/management"):
        token = ADMIN_TOKEN if credential == "valid" else "x" * 30
        case.headers["Authorization"] = f"Bearer {token}"
    elif case.path.endswith("/api/events"):
        topic = (case.path_parameters or {}).get("topic", EG_TOPIC)
        key = target.keys.get(topic, target.keys[EG_TOPIC])
        case.headers["aeg-sas-key"] = key if credential == "valid" else "d3Jvbmc="


@pytest.mark.parametrize(
    ("mode", "path_parameters"),
    [
        (GenerationMode.POSITIVE, None),
        (GenerationMode.POSITIVE, {"topic": MANAGED_TOPIC, "name": "probe"}),
        (GenerationMode.NEGATIVE, None),
    ],
    ids=["positive", "positive-known-resources", "negative"],
)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    target: Target, mode: GenerationMode, path_parameters: dict[str, str] | None
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", target.app)
    cases = schema.as_strategy(mode, path_parameters=path_parameters)
    credentials = st.sampled_from(["valid", "valid", "valid", "wrong", "none"])

    @settings(FUZZ, max_examples=250)
    @given(case=cases, credential=credentials)
    def run(case: schemathesis.Case, credential: str) -> None:
        _authorize(case, target, credential)
        response = case.call(session=target.client)
        case.validate_response(response, checks=CHECKS)

    run()
    assert target.client.get("/healthz").status_code == 200


# publish bodies --------------------------------------------------------------------------------
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
timestamps = st.sampled_from(
    [
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00.1234567+02:00",
        "yesterday",
        "",
        "2026-02-30T00:00:00Z",
    ]
)
texts = st.sampled_from(["", "a", "Order.Placed", "orders/1"]) | st.text(max_size=12)
_eventgrid_fields = {
    "id": texts,
    "subject": texts,
    "eventType": texts,
    "eventTime": timestamps,
}
_eventgrid_extras = {
    "data": json_values,
    "dataVersion": st.sampled_from(["", "1.0", None]),
    "metadataVersion": st.sampled_from(["1", "2"]),
    "topic": st.sampled_from([f"/topics/{EG_TOPIC}", "/topics/other"]),
    "unexpected": scalars,
}
eventgrid_events = st.fixed_dictionaries(_eventgrid_fields, optional=_eventgrid_extras) | (
    st.fixed_dictionaries({}, optional={**_eventgrid_fields, **_eventgrid_extras})
)
_cloudevent_fields = {
    "specversion": st.sampled_from(["1.0", "1.0", "0.3", None]),
    "id": texts,
    "source": texts,
    "type": texts,
}
_cloudevent_extras = {
    "time": timestamps,
    "subject": texts,
    "data": json_values,
    "data_base64": st.sampled_from(["aGVsbG8=", "not base64!"]),
    "correlationid": texts,
    "Bad_Name": scalars,
    "priority": scalars,
}
cloudevents = st.fixed_dictionaries(_cloudevent_fields, optional=_cloudevent_extras) | (
    st.fixed_dictionaries({}, optional={**_cloudevent_fields, **_cloudevent_extras})
)
names_ = st.text(min_size=1, max_size=12)
plain_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
valid_eventgrid_events = st.fixed_dictionaries(
    {"id": names_, "subject": texts, "eventType": names_, "eventTime": timestamps.filter(bool)},
    optional={"data": plain_json, "dataVersion": texts},
)
valid_cloudevents = st.fixed_dictionaries(
    {"specversion": st.just("1.0"), "id": names_, "source": names_, "type": names_},
    optional={"subject": names_, "data": plain_json, "correlationid": names_, "n1": st.integers()},
)
topics = st.sampled_from([EG_TOPIC, EG_TOPIC, CE_TOPIC, CE_TOPIC, "missing-topic"])
credentials = st.sampled_from(["key", "key", "key", "query", "sas", "wrong", "expired", "none"])
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/octet-stream",
        "text/plain",
    ]
)


def _encoded(value: object) -> bytes:
    return json.dumps(value).encode()


# (body, content type, ce-* attributes or None)
bodies = st.one_of(
    st.tuples(
        st.lists(valid_eventgrid_events, min_size=1, max_size=4).map(_encoded),
        st.just("application/json"),
        st.none(),
    ),
    st.tuples(valid_cloudevents.map(_encoded), st.just("application/cloudevents+json"), st.none()),
    st.tuples(
        st.lists(valid_cloudevents, min_size=1, max_size=3).map(_encoded),
        st.just("application/cloudevents-batch+json"),
        st.none(),
    ),
    st.tuples(plain_json.map(_encoded), st.just("application/json"), valid_cloudevents),
    st.tuples(st.lists(eventgrid_events, max_size=4).map(_encoded), content_types, st.none()),
    st.tuples(cloudevents.map(_encoded), st.just("application/cloudevents+json"), st.none()),
    st.tuples(
        st.lists(cloudevents, max_size=3).map(_encoded),
        st.just("application/cloudevents-batch+json"),
        st.none(),
    ),
    st.tuples(st.binary(max_size=64) | json_values.map(_encoded), content_types, cloudevents),
    st.tuples(json_values.map(_encoded), content_types, st.none()),
    st.tuples(st.binary(max_size=128), content_types, st.none()),
)


@dataclass
class Publish:
    topic: str
    headers: dict[str, str]
    body: bytes


@st.composite
def publishes(draw: st.DrawFn, keys: dict[str, str]) -> Publish:
    topic = draw(topics)
    body, content_type, attributes = draw(bodies)
    headers = {"content-type": content_type}
    for name, value in (attributes or {}).items():
        if name not in ("data", "data_base64") and value is not None:
            # percent-encoded as the CloudEvents HTTP binding says (section 3.1.3.2)
            headers[f"ce-{name.lower()}"] = quote(str(value), safe=HEADER_SAFE)
    credential = draw(credentials)
    key = keys.get(topic, keys[EG_TOPIC])
    if credential == "key":
        headers["aeg-sas-key"] = key
    elif credential == "wrong":
        headers["aeg-sas-key"] = keys[CE_TOPIC] if topic == EG_TOPIC else keys[EG_TOPIC]
    elif credential in ("sas", "expired"):
        expiry = datetime.now(UTC) + timedelta(hours=1 if credential == "sas" else -1)
        resource = f"{BASE}/topics/{topic}/api/events"
        headers["aeg-sas-token"] = generate_sas_token(resource, key, expiry)
    elif credential == "query":
        headers["x-key-in-query"] = key
    return Publish(topic, headers, body)


def _accepted_events(body: bytes, headers: dict[str, str]) -> int:
    """How many events a publish that was answered 200 carried."""
    if "ce-specversion" in headers:
        return 1
    document = json.loads(body)
    return len(document) if isinstance(document, list) else 1


def test_random_publish_requests_store_nothing_unless_accepted(target: Target) -> None:
    expected = {EG_TOPIC: target.queued(EG_TOPIC), CE_TOPIC: target.queued(CE_TOPIC)}
    statuses: set[int] = set()

    @settings(FUZZ, max_examples=1000)
    @given(publish=publishes(target.keys))
    def run(publish: Publish) -> None:
        headers = dict(publish.headers)
        params = {"api-version": "2018-01-01"}
        if (key := headers.pop("x-key-in-query", None)) is not None:
            params["aeg-sas-key"] = key
        response = target.client.post(
            f"/topics/{publish.topic}/api/events", data=publish.body, headers=headers, params=params
        )
        statuses.add(response.status_code)
        assert response.status_code in PUBLISH_STATUSES, response.text
        if response.status_code == 200:
            assert response.content == b""
            expected[publish.topic] += _accepted_events(publish.body, headers)
        else:
            assert set(response.json()["error"]) == {"code", "message", "details"}
        if publish.topic in expected:
            assert target.queued(publish.topic) == expected[publish.topic]

    run()
    assert {200, 400, 401, 404} <= statuses
    assert target.client.get("/healthz").status_code == 200
