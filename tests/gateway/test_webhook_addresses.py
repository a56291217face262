"""Webhooks may not reach loopback, private or link-local addresses unless allowed: refused at
validation (Failed, with the reason logged) and at every connection (the delivery outcome is
Forbidden, dead-lettered at once by default), and no secret of the URL is ever logged."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator

import pytest
from test_webhook_receiver import Env, FakeResolver, webhook_env

from choreograph.errors import ConfigError
from choreograph.events import CloudEvent
from choreograph.gateway.addresses import (
    DestinationRefusedError,
    check_destination,
    redact_url,
    refusal_reason,
)
from choreograph.gateway.validation import validate_subscription
from choreograph.gateway.webhook import WebhookSettings

BASE = "http://gateway.test"


@pytest.fixture
async def strict() -> AsyncIterator[Env]:
    """Private addresses refused; ``hooks.test`` resolves to loopback, ``public.test`` to a
    public address and ``mixed.test`` to both."""
    resolver = FakeResolver(
        {
            "hooks.test": ["127.0.0.1"],
            "public.test": ["93.184.216.34"],
            "mixed.test": ["93.184.216.34", "10.0.0.7"],
        }
    )
    async with webhook_env(allow_private=False, resolver=resolver) as env:
        yield env


def event() -> CloudEvent:
    return CloudEvent(id="evt-1", type="Fabrikam.PackageCreated", source="/ingestion", data={})


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("64:ff9b::7f00:1", "a loopback address"),
        ("2002:7f00:1::1", "a loopback address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("::ffff:192.168.0.1", "a private address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("100.64.0.1", "a reserved or otherwise non-public address"),
        ("fec0::1", "a reserved or otherwise non-public address"),
        ("240.0.0.1", "a private address"),
        ("8.8.8.8", None),
        ("93.184.216.34", None),
        ("::ffff:8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_refusal_reasons(address: str, reason: str | None) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/api?code=s3cret&x=1", "https://hooks.example.com/api?***"),
        ("http://user:pw@hooks.example.com:8080/a", "http://***@hooks.example.com:8080/a"),
        ("http://[::1]:9000/hook#frag", "http://[::1]:9000/hook"),
        ("http://hooks.example.com:99999/", "<invalid URL>"),
    ],
)
def test_urls_are_shown_without_their_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_private_destinations_are_allowed_by_environment() -> None:
    assert not WebhookSettings.from_env({}).allow_private_addresses
    assert WebhookSettings.from_env(
        {"CHOREOGRAPH_WEBHOOK_ALLOW_PRIVATE": "1"}
    ).allow_private_addresses
    assert not WebhookSettings.from_env(
        {"CHOREOGRAPH_WEBHOOK_ALLOW_PRIVATE": "0"}
    ).allow_private_addresses
    flag = WebhookSettings.from_env({}, allow_private_addresses=True)
    assert flag.allow_private_addresses
    with pytest.raises(ConfigError, match="CHOREOGRAPH_WEBHOOK_ALLOW_PRIVATE must be 1 or 0"):
        WebhookSettings.from_env({"CHOREOGRAPH_WEBHOOK_ALLOW_PRIVATE": "maybe"})


async def test_check_destination_resolves_names_and_refuses_any_private_address() -> None:
    resolver = FakeResolver(
        {"public.test": ["93.184.216.34"], "mixed.test": ["8.8.8.8", "10.0.0.7"]}
    )
    await check_destination("https://public.test/hook", resolver=resolver)
    await check_destination("https://93.184.216.34/hook", resolver=resolver)
    with pytest.raises(
        DestinationRefusedError, match=r"mixed.test resolves to 10.0.0.7, a private"
    ):
        await check_destination("https://mixed.test/hook", resolver=resolver)
    with pytest.raises(DestinationRefusedError, match=r"refused: ::1 is a loopback address"):
        await check_destination("https://[::1]/hook", resolver=resolver)
    with pytest.raises(OSError, match="not known"):
        await check_destination("https://unknown.test/hook", resolver=resolver)


# at validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "hooks.test", "mixed.test", "169.254.169.254"])
async def test_validation_fails_for_a_private_destination_without_contacting_it(
    strict: Env, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://{host}:{strict.receiver.port}/hook?code=s3cret"
    record = await strict.webhook(validated=False, url=url, schema="EventGridSchema")

    state = await validate_subscription(
        strict.bus, record, validation_base_url=BASE, client=strict.webhooks
    )

    assert state == "Failed"
    assert strict.receiver.requests == []
    assert "webhook destination refused" in caplog.text
    assert "CHOREOGRAPH_WEBHOOK_ALLOW_PRIVATE=1" in caplog.text
    assert "s3cret" not in caplog.text


async def test_validation_with_default_settings_refuses_loopback(env_allowing: Env) -> None:
    record = await env_allowing.webhook(validated=False)

    state = await validate_subscription(env_allowing.bus, record, validation_base_url=BASE)

    assert state == "Failed"
    assert env_allowing.receiver.requests == []


@pytest.fixture
async def env_allowing() -> AsyncIterator[Env]:
    async with webhook_env(allow_private=True) as env:
        yield env


async def test_validation_reaches_a_private_destination_when_allowed(env_allowing: Env) -> None:
    record = await env_allowing.webhook(validated=False, url=env_allowing.receiver.url())

    state = await validate_subscription(
        env_allowing.bus, record, validation_base_url=BASE, client=env_allowing.webhooks
    )

    assert state == "Succeeded"


# at connection -----------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "hooks.test", "[::ffff:127.0.0.1]"])
async def test_delivery_to_a_private_address_is_forbidden_and_dead_lettered_at_once(
    strict: Env, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Validated while the name still pointed elsewhere; now it resolves to loopback.
    await strict.webhook(url=f"http://{host}:{strict.receiver.port}/hook?code=s3cret")
    await strict.bus.publish("orders", event())
    await strict.settle()

    [record] = await strict.bus.dead_letters("orders", "hook")
    assert (record.reason, record.delivery_attempts, record.last_delivery_outcome) == (
        "NonRetryableStatusCode",
        1,
        "Forbidden",
    )
    assert record.last_delivery_error is not None
    assert "a loopback address" in record.last_delivery_error
    assert strict.receiver.requests == []
    assert "s3cret" not in caplog.text
    assert "s3cret" not in record.last_delivery_error


async def test_a_refused_destination_retries_only_as_far_as_the_policy_allows(
    strict: Env,
) -> None:
    await strict.webhook(
        url=f"http://hooks.test:{strict.receiver.port}/hook",
        non_retryable=(),
        attempts=3,
        backoff=(10.0,),
    )
    await strict.bus.publish("orders", event())
    await strict.settle()
    await strict.advance(10)
    await strict.advance(10)

    [record] = await strict.bus.dead_letters("orders", "hook")
    assert (record.reason, record.delivery_attempts, record.last_delivery_outcome) == (
        "MaxDeliveryAttemptsExceeded",
        3,
        "Forbidden",
    )


async def test_a_name_resolving_to_loopback_is_delivered_when_private_is_allowed() -> None:
    async with webhook_env(
        allow_private=True, resolver=FakeResolver({"hooks.test": ["127.0.0.1"]})
    ) as env:
        await env.webhook(url=f"http://hooks.test:{env.receiver.port}/hook")
        await env.bus.publish("orders", event())
        await env.settle()

        assert len(env.receiver.notifications()) == 1
        assert await env.bus.dead_letters("orders", "hook") == []
