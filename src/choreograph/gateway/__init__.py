"""The HTTP gateway: Event Grid's publish API, CloudEvents over HTTP and the management API.

from choreograph.gateway import GatewaySettings, create_app

app = create_app(bus, GatewaySettings.from_env(os.environ))   # any ASGI server
"""

from choreograph.gateway.app import create_app
from choreograph.gateway.auth import generate_sas_token
from choreograph.gateway.errors import HTTPProblem
from choreograph.gateway.metrics import GatewayMetrics
from choreograph.gateway.openapi import openapi_document
from choreograph.gateway.settings import GatewaySettings

__all__ = [
    "GatewayMetrics",
    "GatewaySettings",
    "HTTPProblem",
    "create_app",
    "generate_sas_token",
    "openapi_document",
]
