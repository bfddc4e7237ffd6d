"""What the app keeps on ``app.state.gateway``: settings, stubs, the signer and the key store."""

from __future__ import annotations

from dataclasses import dataclass

from annocloud_server.common.auth import Authenticator
from annocloud_server.gateway.apikeys import ApiKeyStore
from annocloud_server.gateway.grpc_clients import ServiceStubs
from annocloud_server.gateway.settings import GatewaySettings


@dataclass(frozen=True)
class GatewayState:
    settings: GatewaySettings
    stubs: ServiceStubs
    authenticator: Authenticator
    api_keys: ApiKeyStore
