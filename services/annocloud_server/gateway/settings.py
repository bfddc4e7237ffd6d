"""Gateway settings from the environment (prefix ``ANNOCLOUD_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024

_PLACEHOLDERS = {"changeme", "change-me", "changethis", "secret", "password", "placeholder", "todo", "xxx"}


class GatewaySettings(BaseSettings):
    """Limits and timeouts of the REST gateway."""

    model_config = SettingsConfigDict(env_prefix="ANNOCLOUD_", extra="ignore")

    max_upload_bytes: int = Field(default=64 * MIB, gt=0, description="Largest upload or manifest body.")
    max_json_bytes: int = Field(default=8 * MIB, gt=0, description="Largest JSON request body.")
    grpc_deadline_seconds: float = Field(default=30.0, gt=0, description="Deadline of each unary gRPC call.")
    grpc_stream_deadline_seconds: float = Field(
        default=600.0, gt=0, description="Deadline of uploads and content/artifact downloads."
    )
    read_retry_attempts: int = Field(default=3, ge=1, le=10, description="Attempts of idempotent reads.")
    upload_chunk_bytes: int = Field(default=256 * 1024, gt=0, le=4 * MIB, description="Upload chunk size.")
    principal_secret: SecretStr | None = Field(
        default=None, description="Shared secret that signs principals into gRPC metadata (>= 16 bytes)."
    )

    @field_validator("principal_secret")
    @classmethod
    def _refuse_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if raw.strip().lower() in _PLACEHOLDERS or len(raw) < 16:
            raise ValueError(
                "principal_secret is a placeholder or shorter than 16 characters; set a real secret"
            )
        return value
