"""Identity between the gateway and the services.

The gateway authenticates a person or machine and puts a signed ``Principal`` into gRPC metadata.
Services call :func:`principal_from_context` at the start of every RPC: the signature is verified
with the shared secret, so the tenant never comes from a request body.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

import grpc
from annocloud.common.v1 import common_pb2

from annocloud_server.common.errors import PermissionDenied, Unauthenticated

PRINCIPAL_KEY = "x-annocloud-principal-bin"
SIGNATURE_KEY = "x-annocloud-principal-sig"

Role = common_pb2.Role
Principal = common_pb2.Principal

ADMIN = common_pb2.ROLE_ORG_ADMIN
MANAGER = common_pb2.ROLE_PROJECT_MANAGER
REVIEWER = common_pb2.ROLE_REVIEWER
ANNOTATOR = common_pb2.ROLE_ANNOTATOR

MANAGERS = (ADMIN, MANAGER)
REVIEWERS = (ADMIN, MANAGER, REVIEWER)
VENDOR_ADMIN = common_pb2.ROLE_VENDOR_ADMIN
VENDOR_WORKER = common_pb2.ROLE_VENDOR_WORKER
EXPERT_REVIEWER = common_pb2.ROLE_EXPERT_REVIEWER
LABELERS = (ADMIN, MANAGER, ANNOTATOR, REVIEWER, VENDOR_WORKER)
READERS = (ADMIN, MANAGER, REVIEWER, ANNOTATOR)


def _signature(secret: bytes, payload: bytes) -> str:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def sign(principal: common_pb2.Principal, secret: bytes) -> tuple[tuple[str, str | bytes], ...]:
    """gRPC metadata that carries ``principal`` signed with ``secret``."""
    payload = principal.SerializeToString(deterministic=True)
    return ((PRINCIPAL_KEY, payload), (SIGNATURE_KEY, _signature(secret, payload)))


def verify(metadata: Iterable[tuple[str, str | bytes]], secret: bytes) -> common_pb2.Principal:
    """The principal in ``metadata``; Unauthenticated when missing or badly signed."""
    payload: bytes | None = None
    signature: str | None = None
    for key, value in metadata:
        if key == PRINCIPAL_KEY and isinstance(value, bytes):
            payload = value
        elif key == SIGNATURE_KEY and isinstance(value, str):
            signature = value
    if payload is None or signature is None:
        raise Unauthenticated("no principal in the call metadata", reason="PRINCIPAL_MISSING")
    if not hmac.compare_digest(_signature(secret, payload), signature):
        raise Unauthenticated("principal signature does not verify", reason="PRINCIPAL_BAD_SIGNATURE")
    principal = common_pb2.Principal.FromString(payload)
    if not principal.organization_id or not principal.subject:
        raise Unauthenticated("principal lacks organization or subject", reason="PRINCIPAL_INCOMPLETE")
    return principal


class Authenticator:
    """Verifies principals with the shared secret; one per process, handed to every servicer."""

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("the principal signing secret must be at least 16 bytes")
        self._secret = secret

    def principal(self, context: grpc.ServicerContext) -> common_pb2.Principal:
        return verify(context.invocation_metadata(), self._secret)

    def require(self, context: grpc.ServicerContext, roles: Sequence[int]) -> common_pb2.Principal:
        """The caller, who must hold one of ``roles``."""
        principal = self.principal(context)
        require_role(principal, roles)
        return principal

    def metadata_for(self, principal: common_pb2.Principal) -> tuple[tuple[str, str | bytes], ...]:
        return sign(principal, self._secret)


def require_role(principal: common_pb2.Principal, roles: Sequence[int]) -> None:
    if not set(principal.roles) & set(roles):
        wanted = ", ".join(common_pb2.Role.Name(r) for r in roles)  # type: ignore[arg-type]
        raise PermissionDenied(f"this call needs one of the roles: {wanted}", reason="ROLE_REQUIRED")


def make_principal(organization_id: str, subject: str, roles: Sequence[int]) -> common_pb2.Principal:
    return common_pb2.Principal(organization_id=organization_id, subject=subject, roles=list(roles))  # type: ignore[arg-type]


def worker_identity(principal: common_pb2.Principal, project_organization: str) -> str:
    """Who a worker is inside a project: their subject in their own organization's projects, and
    ``subject@organization`` in a project granted to their vendor, so that equal subjects of two
    organizations never share leases, rework or pay."""
    if not project_organization or principal.organization_id == project_organization:
        return principal.subject
    return f"{principal.subject}@{principal.organization_id}"
