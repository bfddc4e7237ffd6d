"""Finding faces and plates through ``ModelAssistService.DetectSensitiveRegions``, as the caller."""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc
from annocloud.modelassist.v1 import modelassist_pb2, modelassist_pb2_grpc

from annocloud_server.common.errors import (
    AnnocloudError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
)
from annocloud_server.common.tasks_client import Metadata
from annocloud_server.ingestion.convert import region_from_proto
from annocloud_server.ingestion.deid import Region

TIMEOUT_SECONDS = 30.0
MAX_IMAGE_BYTES = 32 * 1024 * 1024
"""What DetectSensitiveRegions accepts (its proto says so)."""
NOTHING_STORED = "nothing was stored"


def _translate(error: grpc.RpcError) -> AnnocloudError:
    code = error.code() if hasattr(error, "code") else None
    detail = (error.details() if hasattr(error, "details") else "") or ""
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(
            f"the dataset de-identifies its images and faces and plates cannot be detected: {detail}; "
            + NOTHING_STORED,
            reason="DEIDENTIFY_UNAVAILABLE",
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(
            f"the image was refused by the face and plate detector: {detail}; " + NOTHING_STORED,
            reason="DEIDENTIFY_REFUSED",
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(detail or "not allowed to detect sensitive regions", reason="ROLE_REQUIRED")
    return Unavailable(
        "the dataset de-identifies its images and the face and plate detector (modelassist) did not "
        f"answer ({code.name if code else 'no status'}); " + NOTHING_STORED + ", retry later",
        reason="DEIDENTIFY_UNAVAILABLE",
    )


class SensitiveRegionDetector:
    """DetectSensitiveRegions with the caller's principal and a 30 s deadline; every failure is an
    :class:`AnnocloudError` (UNAVAILABLE when modelassist does not answer)."""

    def __init__(self, connect: Callable[[], grpc.Channel], *, timeout: float = TIMEOUT_SECONDS):
        # Opened on first use: in the embedded runtime modelassist shares a server whose port is
        # only known after every component was created.
        self._connect = connect
        self._timeout = timeout
        self._stub_instance: modelassist_pb2_grpc.ModelAssistServiceStub | None = None
        self._lock = threading.Lock()

    @property
    def _stub(self) -> modelassist_pb2_grpc.ModelAssistServiceStub:
        with self._lock:
            if self._stub_instance is None:
                self._stub_instance = modelassist_pb2_grpc.ModelAssistServiceStub(self._connect())
            return self._stub_instance

    def detect(self, image: bytes, *, metadata: Metadata) -> list[Region]:
        if len(image) > MAX_IMAGE_BYTES:
            raise InvalidArgument(
                f"images of a de-identified dataset are at most {MAX_IMAGE_BYTES} bytes",
                reason="CONTENT_TOO_LARGE",
            )
        try:
            response = self._stub.DetectSensitiveRegions(
                modelassist_pb2.DetectSensitiveRegionsRequest(image=image),
                metadata=metadata,
                timeout=self._timeout,
            )
        except grpc.RpcError as error:
            raise _translate(error) from None
        return [region_from_proto(r) for r in response.regions]
