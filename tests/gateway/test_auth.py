"""Publish authentication (access keys, SAS tokens) and the management API's admin token.

The bus runs on a fake clock at 2026-01-01T00:00:00Z, so token expiry is deterministic.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from azure.eventgrid import generate_sas

from choreograph.bus import Bus
from choreograph.errors import ConfigError
from choreograph.gateway import GatewaySettings, create_app, generate_sas_token
from choreograph.gateway.auth import parse_expiry
from choreograph.testing import FakeClock

ADMIN_TOKEN = "auth-tests-admin-token-0123"
TOPIC = "orders-eg"
BASE = "http://gateway"
ENDPOINT = f"{BASE}/topics/{TOPIC}/api/events"
URL = f"/topics/{TOPIC}/api/events?api-version=2018-01-01"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
EVENTS = [
    {
        "id": "1",
        "subject": "s",
        "eventType": "T",
        "eventTime": "2026-01-01T00:00:00Z",
        "data": {},
    }
]


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    async with Bus("memory://", clock=FakeClock(), retry_jitter=0) as bus:
        for name in (TOPIC, "other-topic"):
            await bus.put_topic(name, {"inputSchema": "EventGridSchema"})
        yield bus


def make_client(bus: Bus, **settings: Any) -> httpx.AsyncClient:
    options: dict[str, Any] = {"admin_token": ADMIN_TOKEN, **settings}
    app = create_app(bus, GatewaySettings(**options))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


@pytest.fixture
async def client(bus: Bus) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(bus) as client:
        yield client


async def keys(bus: Bus, topic: str = TOPIC) -> tuple[str, str]:
    record = await bus.get_topic(topic)
    return record.key1, record.key2


def sign(resource: str, expiry: str, key: str) -> str:
    """A token over the raw ``r=…&e=…`` text given (no encoding is applied here)."""
    unsigned = f"r={resource}&e={expiry}"
    digest = hmac.new(base64.b64decode(key), unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}&s={quote(base64.b64encode(digest))}"


def assert_unauthorized(response: httpx.Response, detail_code: str) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "Unauthorized"
    assert error["details"][0]["code"] == detail_code


async def publish(client: httpx.AsyncClient, url: str = URL, **headers: str) -> httpx.Response:
    return await client.post(url, json=EVENTS, headers=headers)


# access keys -----------------------------------------------------------------------------------
@pytest.mark.parametrize("which", [0, 1])
async def test_either_key_in_the_aeg_sas_key_header_is_accepted(
    bus: Bus, client: httpx.AsyncClient, which: int
) -> None:
    response = await publish(client, **{"aeg-sas-key": (await keys(bus))[which]})
    assert response.status_code == 200


async def test_the_key_as_a_query_parameter_is_accepted(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    key1, _ = await keys(bus)
    response = await publish(client, f"{URL}&aeg-sas-key={quote(key1, safe='')}")
    assert response.status_code == 200


async def test_a_missing_credential_is_401(client: httpx.AsyncClient) -> None:
    assert_unauthorized(await publish(client), "MissingCredential")


@pytest.mark.parametrize("where", ["header", "query"])
async def test_a_wrong_key_is_401(bus: Bus, client: httpx.AsyncClient, where: str) -> None:
    wrong, _ = await keys(bus, "other-topic")
    if where == "header":
        response = await publish(client, **{"aeg-sas-key": wrong})
    else:
        response = await publish(client, f"{URL}&aeg-sas-key={quote(wrong, safe='')}")
    assert_unauthorized(response, "InvalidKey")


async def test_a_regenerated_key_stops_working_and_the_other_keeps_working(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    old1, key2 = await keys(bus)
    await bus.regenerate_key(TOPIC, "key1")
    assert_unauthorized(await publish(client, **{"aeg-sas-key": old1}), "InvalidKey")
    assert (await publish(client, **{"aeg-sas-key": key2})).status_code == 200


async def test_every_credential_presented_must_be_valid(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    key1, _ = await keys(bus)
    wrong, _ = await keys(bus, "other-topic")
    response = await publish(
        client, **{"aeg-sas-key": key1, "aeg-sas-token": sign(ENDPOINT, "2030-01-01", wrong)}
    )
    assert_unauthorized(response, "InvalidSasToken")


async def test_an_entra_bearer_token_is_refused_on_publish(client: httpx.AsyncClient) -> None:
    response = await publish(client, authorization="Bearer eyJhbGciOi.e30.sig")
    assert_unauthorized(response, "UnsupportedCredential")


# SAS tokens ------------------------------------------------------------------------------------
@pytest.mark.parametrize("header", ["aeg-sas-token", "authorization"])
async def test_a_token_from_the_azure_sdk_is_accepted_in_either_header(
    bus: Bus, client: httpx.AsyncClient, header: str
) -> None:
    key1, _ = await keys(bus)
    token = generate_sas(ENDPOINT, key1, NOW + timedelta(hours=1))
    assert "apiVersion" in token  # the SDK signs a resource with a query string
    value = token if header == "aeg-sas-token" else f"SharedAccessSignature {token}"
    assert (await publish(client, **{header: value})).status_code == 200


async def test_a_token_signed_with_key2_is_accepted(bus: Bus, client: httpx.AsyncClient) -> None:
    _, key2 = await keys(bus)
    token = generate_sas_token(ENDPOINT, key2, NOW + timedelta(minutes=5))
    assert (await publish(client, **{"aeg-sas-token": token})).status_code == 200


@pytest.mark.parametrize(
    "expiry",
    [
        "2026-01-01%2000%3A05%3A00%2B00%3A00",  # str(datetime), quoted as the Azure SDK does
        "2026-01-01T00:05:00Z",
        "2026-01-01T00%3A05%3A00.1234567Z",  # .NET round-trip format
        "2026-01-01T01:05:00%2B01:00",
        "1%2F1%2F2026%2012%3A05%3A00%20AM",  # C# DateTime.ToString(en-US), "M/d/yyyy h:mm:ss tt"
        "1/1/2026 12:05:00 AM",
        "2026-01-01 00:05:00",  # no offset: UTC
        str(int(NOW.timestamp()) + 300),
    ],
)
async def test_expiry_formats_signers_write_are_accepted(
    bus: Bus, client: httpx.AsyncClient, expiry: str
) -> None:
    key1, _ = await keys(bus)
    token = sign(quote(ENDPOINT, safe=""), expiry, key1)
    assert (await publish(client, **{"aeg-sas-token": token})).status_code == 200


async def test_the_signature_covers_the_token_text_as_received(
    bus: Bus, client: httpx.AsyncClient
) -> None:
    key1, _ = await keys(bus)
    lower_hex = quote(ENDPOINT, safe="").replace("%3A", "%3a").replace("%2F", "%2f")
    token = sign(lower_hex, "2030-01-01T00:00:00Z", key1)
    assert (await publish(client, **{"aeg-sas-token": token})).status_code == 200


@pytest.mark.parametrize(
    "expiry", ["2025-12-31T23:59:59Z", "2026-01-01T00:00:00Z", "12/31/2025 11:00:00 PM"]
)
async def test_an_expired_token_is_401(bus: Bus, client: httpx.AsyncClient, expiry: str) -> None:
    key1, _ = await keys(bus)
    token = sign(quote(ENDPOINT, safe=""), quote(expiry), key1)
    assert_unauthorized(await publish(client, **{"aeg-sas-token": token}), "ExpiredSasToken")


@pytest.mark.parametrize("part", ["r", "e", "s"])
async def test_a_tampered_token_is_401(bus: Bus, client: httpx.AsyncClient, part: str) -> None:
    key1, _ = await keys(bus)
    token = generate_sas_token(ENDPOINT, key1, NOW + timedelta(hours=1))
    fields = dict(piece.split("=", 1) for piece in token.split("&"))
    if part == "r":
        fields["r"] = quote(f"{BASE}/topics/other-topic/api/events", safe="")
    elif part == "e":
        fields["e"] = quote("2099-01-01 00:00:00+00:00", safe="")
    else:
        signature = bytearray(base64.b64decode(unquote(fields["s"])))
        signature[0] ^= 1
        fields["s"] = quote(base64.b64encode(bytes(signature)))
    tampered = "&".join(f"{name}={value}" for name, value in fields.items())
    assert_unauthorized(await publish(client, **{"aeg-sas-token": tampered}), "InvalidSasToken")


@pytest.mark.parametrize(
    "resource",
    [
        f"{BASE}/topics/other-topic/api/events",
        f"{BASE}/topics/orders",  # a prefix of the text, not of the path's segments
        "http://elsewhere/topics/orders-eg/api/events",
        "https://gateway/topics/orders-eg/api/events",
        "http://gateway:8080/topics/orders-eg/api/events",
        "not a url",
    ],
)
async def test_a_token_for_another_resource_is_401(
    bus: Bus, client: httpx.AsyncClient, resource: str
) -> None:
    key1, _ = await keys(bus)
    token = generate_sas_token(resource, key1, NOW + timedelta(hours=1))
    assert_unauthorized(
        await publish(client, **{"aeg-sas-token": token}), "InvalidSasTokenResource"
    )


@pytest.mark.parametrize(
    "resource",
    [
        ENDPOINT,
        f"{BASE}/topics/{TOPIC}",
        f"{BASE}/",
        "HTTP://GATEWAY:80/topics/orders-eg/api/events?apiVersion=2018-01-01",
    ],
)
async def test_a_token_for_a_prefix_of_the_url_is_accepted(
    bus: Bus, client: httpx.AsyncClient, resource: str
) -> None:
    key1, _ = await keys(bus)
    token = generate_sas_token(resource, key1, NOW + timedelta(hours=1))
    assert (await publish(client, **{"aeg-sas-token": token})).status_code == 200


@pytest.mark.parametrize(
    "token",
    [
        "",
        "r=a&e=b",
        "e=b&r=a&s=c",
        "r=a&e=b&s=c&skn=d",
        "r=x&e=2030-01-01&s=%%%",
        "r=x&e=never&s=AAAA",
    ],
)
async def test_a_malformed_token_is_401(client: httpx.AsyncClient, token: str) -> None:
    assert_unauthorized(await publish(client, **{"aeg-sas-token": token}), "MalformedSasToken")


async def test_behind_a_proxy_tokens_are_matched_against_the_public_url(bus: Bus) -> None:
    key1, _ = await keys(bus)
    public = "https://events.example.com/bus"
    async with make_client(bus, public_url=public) as client:
        good = generate_sas_token(f"{public}/topics/{TOPIC}/api/events", key1, NOW + timedelta(1))
        assert (await publish(client, **{"aeg-sas-token": good})).status_code == 200
        direct = generate_sas_token(ENDPOINT, key1, NOW + timedelta(1))
        response = await publish(client, **{"aeg-sas-token": direct})
        assert_unauthorized(response, "InvalidSasTokenResource")


async def test_no_key_or_signature_reaches_a_response_or_the_logs(
    bus: Bus, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    key1, key2 = await keys(bus)
    wrong, _ = await keys(bus, "other-topic")
    token = generate_sas_token(ENDPOINT, wrong, NOW + timedelta(hours=1))
    signature = token.rsplit("s=", 1)[1]
    caplog.set_level(logging.DEBUG)
    responses = [
        await publish(client, **{"aeg-sas-key": wrong}),
        await publish(client, **{"aeg-sas-token": token}),
        await publish(client, **{"aeg-sas-key": key1}),
        await client.get("/management/topics", headers={"authorization": "Bearer wrong-token"}),
    ]
    texts = [response.text for response in responses] + [r.getMessage() for r in caplog.records]
    for secret in (key1, key2, wrong, signature, ADMIN_TOKEN, "wrong-token"):
        assert not any(secret in text for text in texts)


# expiry parsing --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-01-01 00:00:00+00:00", datetime(2030, 1, 1, tzinfo=UTC)),
        ("2030-01-01T00:00:00Z", datetime(2030, 1, 1, tzinfo=UTC)),
        ("6/15/2017 6:20:15 PM", datetime(2017, 6, 15, 18, 20, 15, tzinfo=UTC)),
        ("06/15/2017 18:20:15", datetime(2017, 6, 15, 18, 20, 15, tzinfo=UTC)),
        ("1893456000", datetime(2030, 1, 1, tzinfo=UTC)),
    ],
)
def test_parse_expiry_reads_each_form(text: str, expected: datetime) -> None:
    assert parse_expiry(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "13/45/2017 6:20:15 PM", "9" * 30])
def test_parse_expiry_refuses_what_is_not_a_date(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the input
        parse_expiry(text)


# the admin token -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "MissingCredential"),
        ("Bearer not-the-admin-token", "InvalidCredential"),
        (f"Basic {ADMIN_TOKEN}", "InvalidCredential"),
        (ADMIN_TOKEN, "InvalidCredential"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/management/topics"),
        ("GET", f"/management/topics/{TOPIC}"),
        ("POST", f"/management/topics/{TOPIC}/listKeys"),
        ("DELETE", f"/management/topics/{TOPIC}"),
        ("GET", "/management/no/such/route"),
    ],
)
async def test_management_without_the_admin_token_is_401_before_routing(
    bus: Bus,
    client: httpx.AsyncClient,
    authorization: str | None,
    code: str,
    method: str,
    path: str,
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    response = await client.request(method, path, headers=headers)
    assert_unauthorized(response, code)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert TOPIC in [topic.name for topic in await bus.list_topics()]


async def test_management_with_the_admin_token_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/management/topics", headers={"authorization": f"bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 200


async def test_an_insecure_gateway_serves_management_without_a_token(bus: Bus) -> None:
    app = create_app(bus, GatewaySettings(insecure_no_admin_token=True))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        assert (await client.get("/management/topics")).status_code == 200


# settings --------------------------------------------------------------------------------------
def test_settings_come_from_the_environment_and_flags_override_them() -> None:
    settings = GatewaySettings.from_env(
        {
            "CHOREOGRAPH_ADMIN_TOKEN": ADMIN_TOKEN,
            "CHOREOGRAPH_GATEWAY_DEFAULT_TOPIC": "orders",
            "CHOREOGRAPH_GATEWAY_PUBLIC_URL": "https://events.example.com/",
            "CHOREOGRAPH_GATEWAY_MAX_REQUEST_BYTES": "2000000",
        },
        default_topic="payments",
        public_url=None,
    )
    assert settings.admin_token == ADMIN_TOKEN
    assert settings.default_topic == "payments"
    assert settings.public_url == "https://events.example.com"
    assert settings.max_request_bytes == 2_000_000
    assert ADMIN_TOKEN not in repr(settings)


@pytest.mark.parametrize(
    ("environ", "overrides", "fragment"),
    [
        ({}, {}, "no admin token"),
        ({"CHOREOGRAPH_ADMIN_TOKEN": "short"}, {}, "at least 16"),
        ({"CHOREOGRAPH_ADMIN_TOKEN": "has spaces in it, sadly"}, {}, "without spaces"),
        ({"CHOREOGRAPH_ADMIN_TOKEN": ADMIN_TOKEN}, {"insecure_no_admin_token": True}, "one or"),
        ({"CHOREOGRAPH_INSECURE_NO_ADMIN_TOKEN": "maybe"}, {}, "1 or 0"),
        ({"CHOREOGRAPH_ADMIN_TOKEN": ADMIN_TOKEN}, {"default_topic": "a b"}, "default topic"),
        ({"CHOREOGRAPH_ADMIN_TOKEN": ADMIN_TOKEN}, {"public_url": "ftp://x"}, "public URL"),
        ({"CHOREOGRAPH_ADMIN_TOKEN": ADMIN_TOKEN}, {"public_url": "http://x/?q=1"}, "query"),
        (
            {"CHOREOGRAPH_ADMIN_TOKEN": ADMIN_TOKEN, "CHOREOGRAPH_GATEWAY_MAX_REQUEST_BYTES": "x"},
            {},
            "integer",
        ),
        ({"CHOREOGRAPH_ADMIN_TOKEN": ADMIN_TOKEN}, {"max_request_bytes": 10}, "1024"),
    ],
)
def test_invalid_settings_are_refused_with_a_clear_config_error(
    environ: dict[str, str], overrides: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        GatewaySettings.from_env(environ, **overrides)


def test_the_insecure_mode_is_an_explicit_choice() -> None:
    settings = GatewaySettings.from_env({"CHOREOGRAPH_INSECURE_NO_ADMIN_TOKEN": "1"})
    assert settings.admin_token is None
    assert settings.insecure_no_admin_token
