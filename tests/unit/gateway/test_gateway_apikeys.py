"""API key store and gateway settings."""

from __future__ import annotations

import json
import stat

import pytest
from annocloud.common.v1 import common_pb2
from annocloud_server.gateway.apikeys import ApiKeyStore, parse_role
from annocloud_server.gateway.settings import GatewaySettings
from pydantic import ValidationError


def test_keys_are_stored_only_as_hashes(tmp_path):
    """The file holds sha256 hashes, never the plaintext, and is private."""
    store = ApiKeyStore(tmp_path)
    key = store.create_key("acme", "key:bot", ["admin", "ROLE_REVIEWER"])
    assert key.startswith("ak_")
    assert len(key) > 40
    text = (tmp_path / "api_keys.json").read_text()
    assert key not in text
    entry = next(iter(json.loads(text)["keys"].values()))
    assert entry["roles"] == ["ROLE_ORG_ADMIN", "ROLE_REVIEWER"]
    assert stat.S_IMODE((tmp_path / "api_keys.json").stat().st_mode) == 0o600


def test_lookup_finds_principal_and_rejects_unknown(tmp_path):
    """A created key resolves to its principal in a fresh store; unknown keys do not."""
    key = ApiKeyStore(tmp_path).create_key("acme", "user:a", ["annotator"])
    store = ApiKeyStore(tmp_path / "api_keys.json")
    principal = store.lookup(key)
    assert principal == common_pb2.Principal(
        organization_id="acme", subject="user:a", roles=[common_pb2.ROLE_ANNOTATOR]
    )
    assert store.lookup(key + "x") is None
    assert store.lookup("nope") is None
    assert ApiKeyStore(tmp_path / "elsewhere").lookup(key) is None


def test_keys_created_elsewhere_are_seen(tmp_path):
    """A running store notices keys another process added to the file."""
    running = ApiKeyStore(tmp_path)
    first = running.create_key("acme", "a", ["admin"])
    second = ApiKeyStore(tmp_path).create_key("acme", "b", ["manager"])
    assert running.lookup(first) is not None
    assert running.lookup(second) is not None


def test_bad_key_requests_are_refused(tmp_path):
    """Bad organizations, empty subjects and unknown or missing roles raise ValueError."""
    store = ApiKeyStore(tmp_path)
    with pytest.raises(ValueError):
        store.create_key("Acme Corp", "a", ["admin"])
    with pytest.raises(ValueError):
        store.create_key("acme", "", ["admin"])
    with pytest.raises(ValueError):
        store.create_key("acme", "a", ["emperor"])
    with pytest.raises(ValueError):
        store.create_key("acme", "a", [])
    assert not (tmp_path / "api_keys.json").exists()


def test_parse_role_forms():
    """Aliases, enum names with or without prefix, and numbers."""
    assert parse_role("admin") == common_pb2.ROLE_ORG_ADMIN
    assert parse_role("project_manager") == common_pb2.ROLE_PROJECT_MANAGER
    assert parse_role(common_pb2.ROLE_REVIEWER) == common_pb2.ROLE_REVIEWER
    with pytest.raises(ValueError):
        parse_role(0)


def test_settings_defaults_env_and_placeholder_secret(monkeypatch):
    """Defaults match the brief, env overrides work and placeholder secrets are refused."""
    settings = GatewaySettings()
    assert settings.max_upload_bytes == 64 * 1024 * 1024
    assert settings.max_json_bytes == 8 * 1024 * 1024
    assert settings.grpc_deadline_seconds == 30
    monkeypatch.setenv("ANNOCLOUD_GRPC_DEADLINE_SECONDS", "5")
    assert GatewaySettings().grpc_deadline_seconds == 5
    monkeypatch.setenv("ANNOCLOUD_PRINCIPAL_SECRET", "changeme")
    with pytest.raises(ValidationError):
        GatewaySettings()
    monkeypatch.setenv("ANNOCLOUD_PRINCIPAL_SECRET", "a-real-secret-of-enough-length")
    assert GatewaySettings().principal_secret is not None
