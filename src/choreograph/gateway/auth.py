"""Who may publish to a topic and who may manage the bus.

Publishing takes one of the topic's two access keys, or a SAS token signed with one (Event
Grid's schemes, reference §2.2):

    aeg-sas-key: <key>                          (or ?aeg-sas-key=<key> in the query)
    aeg-sas-token: r=<resource>&e=<expiry>&s=<signature>
    Authorization: SharedAccessSignature r=<resource>&e=<expiry>&s=<signature>

A SAS token's signature is Base64(HMAC-SHA256(Base64Decode(key), "r=…&e=…")) computed over the
``r=…&e=…`` text exactly as received (never a re-encoding, since signers percent-encode
differently). The resource, decoded and without its query string (the Azure SDK signs
``<endpoint>?apiVersion=2018-01-01``), must be a prefix of the request URL on a path-segment
boundary; the expiry may be ``str(datetime)`` (the Azure SDK), ISO 8601, the C#
``M/d/yyyy h:mm:ss tt`` form or epoch seconds, and is read as UTC when it has no offset.
Every credential a request presents must be valid. Keys and signatures are compared in
constant time and never appear in a message or a log line.

The management API takes ``Authorization: Bearer <admin token>`` (see ``GatewaySettings``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote, unquote, urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from choreograph.bus.topic import TopicRecord
from choreograph.gateway.errors import HTTPProblem, error_response
from choreograph.gateway.settings import GatewaySettings

__all__ = [
    "AdminAuthMiddleware",
    "SasToken",
    "authenticate_publisher",
    "check_admin_token",
    "generate_sas_token",
    "parse_expiry",
    "parse_sas_token",
    "request_url",
]

logger = logging.getLogger(__name__)

SAS_SCHEME: Final = "sharedaccesssignature"
_SAFE: Final = "~()*!.'"  # what the Azure SDK leaves unencoded
_C_SHARP_FORMATS: Final = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S")


def _unauthorized(message: str, code: str) -> HTTPProblem:
    return HTTPProblem(401, message, code=code)


# SAS tokens -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SasToken:
    """A parsed SAS token: decoded resource and expiry, the raw signed text and the signature."""

    resource: str
    expiry: str
    signed: str
    signature: bytes


def parse_sas_token(text: str) -> SasToken:
    """Split ``r=…&e=…&s=…``; raises a 401 HTTPProblem for anything else."""
    parts = text.strip().split("&")
    names = [part.partition("=")[0] for part in parts]
    if names != ["r", "e", "s"]:
        raise _unauthorized(
            "the SAS token must have the form r=<resource>&e=<expiry>&s=<signature>",
            "MalformedSasToken",
        )
    values = [part.partition("=")[2] for part in parts]
    try:
        signature = base64.b64decode(unquote(values[2]), validate=True)
    except (binascii.Error, ValueError):
        raise _unauthorized(
            "the SAS token's signature is not base64", "MalformedSasToken"
        ) from None
    return SasToken(
        resource=unquote(values[0]),
        expiry=unquote(values[1]),
        signed=f"{parts[0]}&{parts[1]}",
        signature=signature,
    )


def parse_expiry(text: str) -> datetime:
    """A SAS expiry in any of the forms signers write; ValueError when it is none of them."""
    text = text.strip()
    if text.isascii() and text.isdigit():
        try:
            return datetime.fromtimestamp(int(text), UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"{text[:60]!r} is out of range") from None
    parsed: datetime | None = None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        for form in _C_SHARP_FORMATS:
            try:
                parsed = datetime.strptime(text, form)
                break
            except ValueError:
                continue
    if parsed is None:
        raise ValueError(f"{text[:60]!r} is not a date and time")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _signature(key: str, signed: str) -> bytes | None:
    try:
        secret = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return None
    return hmac.new(secret, signed.encode("utf-8"), hashlib.sha256).digest()


def generate_sas_token(resource: str, key: str, expires_at: datetime) -> str:
    """A SAS token for ``resource`` signed with ``key``, in the Azure SDK's format
    (``azure.eventgrid.generate_sas`` with the resource given whole)."""
    unsigned = f"r={quote(resource, safe=_SAFE)}&e={quote(str(expires_at), safe=_SAFE)}"
    digest = _signature(key, unsigned)
    if digest is None:
        raise ValueError("the key must be base64, as topic keys are")
    return f"{unsigned}&s={quote(base64.b64encode(digest), safe=_SAFE)}"


def _origin(parts: tuple[str, str | None, int | None]) -> tuple[str, str, int]:
    scheme, host, port = parts
    default = 443 if scheme == "https" else 80
    return scheme, (host or "").lower(), port or default


def _covers(resource: str, url: str) -> bool:
    """Whether ``resource`` (its query ignored) is a prefix of ``url`` on a segment boundary."""
    try:
        signed, target = urlsplit(resource), urlsplit(url)
        signed_origin = _origin((signed.scheme.lower(), signed.hostname, signed.port))
        target_origin = _origin((target.scheme.lower(), target.hostname, target.port))
    except ValueError:
        return False
    if signed_origin != target_origin:
        return False
    prefix, path = signed.path or "/", target.path or "/"
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def _check_sas(token_text: str, topic: TopicRecord, url: str, now: float) -> None:
    token = parse_sas_token(token_text)
    try:
        expiry = parse_expiry(token.expiry)
    except ValueError:
        raise _unauthorized(
            "the SAS token's expiry `e` is not a date and time", "MalformedSasToken"
        ) from None
    # Every key is tried, so the time taken does not tell which one (if any) matched.
    matched = False
    for key in (topic.key1, topic.key2):
        expected = _signature(key, token.signed)
        if expected is not None and hmac.compare_digest(expected, token.signature):
            matched = True
    if not matched:
        raise _unauthorized(
            f"the SAS token's signature does not match a key of topic {topic.name!r}",
            "InvalidSasToken",
        )
    if expiry.timestamp() <= now:
        raise _unauthorized(f"the SAS token expired at {expiry.isoformat()}", "ExpiredSasToken")
    if not _covers(token.resource, url):
        raise _unauthorized(
            f"the SAS token is for {token.resource[:200]!r}, which is not a prefix of {url!r}",
            "InvalidSasTokenResource",
        )


def _check_key(value: str, topic: TopicRecord) -> None:
    provided = value.strip().encode("utf-8")
    matches_key1 = hmac.compare_digest(provided, topic.key1.encode("ascii"))
    matches_key2 = hmac.compare_digest(provided, topic.key2.encode("ascii"))
    if not (matches_key1 | matches_key2):
        raise _unauthorized(f"the key is not a key of topic {topic.name!r}", "InvalidKey")


def request_url(request: Request, public_url: str | None) -> str:
    """The URL the client addressed, without its query: under ``public_url`` when the gateway
    sits behind a proxy, otherwise from the request's scheme and ``Host``."""
    if public_url is not None:
        return public_url + request.url.path
    url = request.url
    return f"{url.scheme}://{url.netloc}{url.path}"


_CREDENTIAL_HEADERS: Final = {
    b"aeg-sas-key": "aeg-sas-key",
    b"aeg-sas-token": "aeg-sas-token",
    b"authorization": "authorization",
}
"""The headers that carry a publisher's credential, in the order they are checked."""


def authenticate_publisher(
    request: Request, topic: TopicRecord, *, public_url: str | None, now: float
) -> str:
    """Check the credentials of a publish request; return the scheme that authenticated it.
    A SAS token is checked against the URL the client addressed (see :func:`request_url`).

    Raises a 401 HTTPProblem when no credential is presented or any presented one is invalid.
    """
    found: dict[str, list[str]] = {}
    for raw_name, raw_value in request.headers.raw:  # one pass: this runs on every publish
        name = _CREDENTIAL_HEADERS.get(raw_name.lower())
        if name is not None:
            found.setdefault(name, []).append(raw_value.decode("latin-1"))
    presented: list[tuple[str, str]] = []
    for name in _CREDENTIAL_HEADERS.values():
        values = found.get(name, ())
        if len(values) > 1:
            raise _unauthorized(f"the {name} header appears more than once", "AmbiguousCredential")
        if values:
            presented.append((name, values[0]))
    query_keys = (
        request.query_params.getlist("aeg-sas-key") if request.scope["query_string"] else []
    )
    if len(query_keys) > 1:
        raise _unauthorized(
            "aeg-sas-key appears more than once in the query", "AmbiguousCredential"
        )
    if query_keys:
        presented.append(("query aeg-sas-key", query_keys[0]))
    if not presented:
        raise _unauthorized(
            "no credential: send a key of the topic in the aeg-sas-key header (or query "
            "parameter), or a SAS token in aeg-sas-token or Authorization: SharedAccessSignature",
            "MissingCredential",
        )
    for name, value in presented:
        if name == "aeg-sas-token":
            _check_sas(value, topic, request_url(request, public_url), now)
        elif name == "authorization":
            scheme, _, rest = value.strip().partition(" ")
            if scheme.lower() == SAS_SCHEME:
                _check_sas(rest, topic, request_url(request, public_url), now)
            elif scheme.lower() == "bearer":
                raise _unauthorized(
                    "Microsoft Entra ID bearer tokens are not supported; use a topic key or a "
                    "SAS token",
                    "UnsupportedCredential",
                )
            else:
                raise _unauthorized(
                    "the Authorization header must be SharedAccessSignature r=…&e=…&s=…",
                    "UnsupportedCredential",
                )
        else:
            _check_key(value, topic)
    return presented[0][0]


# management ------------------------------------------------------------------------------------
_BEARER_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="choreograph"'}


def check_admin_token(request: Request, settings: GatewaySettings) -> None:
    """Require ``Authorization: Bearer <admin token>``; a no-op when the gateway runs without
    one (``insecure_no_admin_token``)."""
    expected = settings.admin_token
    if expected is None:
        return
    header = request.headers.get("authorization")
    if header is None:
        raise HTTPProblem(
            401,
            "the management API needs Authorization: Bearer <admin token>",
            code="MissingCredential",
            headers=_BEARER_CHALLENGE,
        )
    scheme, _, token = header.strip().partition(" ")
    provided = token.strip().encode("utf-8")
    if scheme.lower() != "bearer" or not hmac.compare_digest(provided, expected.encode("ascii")):
        raise HTTPProblem(
            401,
            "the bearer token is not the admin token",
            code="InvalidCredential",
            headers={"WWW-Authenticate": 'Bearer realm="choreograph", error="invalid_token"'},
        )


class AdminAuthMiddleware:
    """Refuses every request under it without the admin bearer token (before routing, so an
    unauthenticated caller cannot even learn which resources exist)."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            try:
                check_admin_token(request, self.settings)
            except HTTPProblem as problem:
                client = request.client.host if request.client else "?"
                logger.info(
                    "refused %s %s from %s: %s",
                    request.method,
                    request.url.path,
                    client,
                    problem.code,
                )
                await error_response(problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)
