"""Code every service shares: errors, identity, storage, events, servers, telemetry."""
