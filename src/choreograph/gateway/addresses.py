"""Where webhooks may go: refusing loopback, private and link-local destinations (SSRF).

A webhook URL is chosen by whoever may create subscriptions, and the bus then makes requests to
it from inside the network. Unless private destinations are explicitly allowed (a development
machine: ``CHOREOGRAPH_WEBHOOK_ALLOW_PRIVATE=1``), a destination is refused when any address its
host resolves to is not a public unicast address. The check runs twice:

* when the subscription is validated (:func:`check_destination`), to fail early with a clear
  reason;
* on every new connection (:class:`CheckingResolver` plus the IP-literal check in
  :func:`literal_refusal`), because a DNS name can resolve elsewhere later (DNS rebinding).

Addresses embedded in IPv6 (IPv4-mapped, 6to4, NAT64) are judged by the IPv4 address they carry.
URLs are shown only through :func:`redact_url`: the query string often carries a secret.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from choreograph.errors import ChoreographError

__all__ = [
    "ALLOW_PRIVATE_HINT",
    "CheckingResolver",
    "DestinationRefusedError",
    "IPAddress",
    "check_destination",
    "literal_refusal",
    "redact_url",
    "refusal_reason",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW_PRIVATE_HINT: Final = (
    "set CHOREOGRAPH_WEBHOOK_ALLOW_PRIVATE=1 (--webhook-allow-private) to allow private "
    "destinations on a development machine"
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")


class DestinationRefusedError(ChoreographError, OSError):
    """A webhook destination resolves to an address webhooks may not reach.

    An ``OSError`` so that, raised by the resolver while connecting, it travels through aiohttp
    as a connection failure (``ClientConnectorDNSError``) whose cause it is.
    """

    def __init__(self, host: str, address: str, reason: str) -> None:
        self.host = host
        self.address = address
        self.reason = reason
        shown = f"{address} is" if host.strip("[]") == address else f"{host} resolves to {address},"
        super().__init__(f"webhook destination refused: {shown} {reason}; {ALLOW_PRIVATE_HINT}")

    def __str__(self) -> str:
        return str(self.args[0])


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), else the address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def refusal_reason(address: IPAddress) -> str | None:
    """Why webhooks may not go to ``address`` (e.g. ``"a loopback address"``), or None."""
    address = _embedded_ipv4(address)
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local
    if site_local or address.is_reserved or not address.is_global:
        return "a reserved or otherwise non-public address"
    return None


def _parse_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def literal_refusal(host: str) -> DestinationRefusedError | None:
    """The refusal of a host given as an IP literal (which no resolver sees), or None.

    Hosts that are names, including legacy numeric forms such as ``2130706433``, go through the
    resolver and are checked there.
    """
    address = _parse_address(host.strip("[]"))
    if address is None:
        return None
    reason = refusal_reason(address)
    return None if reason is None else DestinationRefusedError(host, str(address), reason)


def _check_results(host: str, results: list[ResolveResult]) -> None:
    for result in results:
        address = _parse_address(result["host"])
        reason = "not an IP address" if address is None else refusal_reason(address)
        if reason is not None:
            raise DestinationRefusedError(host, result["host"], reason)


class CheckingResolver(AbstractResolver):
    """An aiohttp resolver that refuses hosts resolving to any non-public address.

    Refusing the whole host (rather than dropping the bad addresses) keeps the rule simple to
    state: a destination is public or it is refused.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._owns_inner = inner is None
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        _check_results(host, results)
        return results

    async def close(self) -> None:
        """Close the resolver this one made (a given ``inner`` belongs to its giver)."""
        if self._owns_inner:
            await self._inner.close()


async def check_destination(url: str, *, resolver: AbstractResolver | None = None) -> None:
    """Refuse ``url`` (raise :class:`DestinationRefusedError`) if its host is or resolves to a
    non-public address. A name that does not resolve raises ``OSError``."""
    host = urlsplit(url).hostname or ""
    refused = literal_refusal(host)
    if refused is not None:
        raise refused
    if _parse_address(host) is not None:
        return
    checker = CheckingResolver(resolver)
    try:
        await checker.resolve(host, 0, socket.AF_UNSPEC)
    finally:
        await checker.close()


def redact_url(url: str) -> str:
    """``url`` safe to log or show: user information and the query string are hidden."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
    except ValueError:
        return "<invalid URL>"
    if parts.username is not None or parts.password is not None:
        netloc = f"***@{netloc}"
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
