"""Seeds the demo organization of ``annocloud serve --demo`` through the public REST API (SDK).

Idempotent: request ids and content-hash deduplication make a restart reuse what exists. The demo
API keys are kept in ``<data dir>/demo_keys.json`` (demo only: real keys are stored hashed).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from annocloud_sdk import Client

from annocloud_server.demo import render_scene, street_schema, ticket_schema, ticket_texts

if TYPE_CHECKING:
    from annocloud_server.embedded import EmbeddedStack

DEMO_ORG = "demo"
DEMO_SCENES = 24
DEMO_TICKETS = 40


def demo_keys(stack: EmbeddedStack) -> dict[str, str]:
    from annocloud_server.embedded import DEMO_USERS

    path = stack.data_dir / "demo_keys.json"
    if path.exists():
        keys: dict[str, str] = json.loads(path.read_text())
        if all(stack.api_keys.lookup(key) is not None for key in keys.values()):
            return keys
    keys = {
        subject: stack.api_keys.create_key(DEMO_ORG, subject, list(roles)) for subject, roles in DEMO_USERS
    }
    path.write_text(json.dumps(keys, indent=2))
    path.chmod(0o600)
    return keys


def seed_demo(stack: EmbeddedStack) -> dict[str, str]:
    """Creates the demo datasets and projects; returns the demo API keys by subject."""
    keys = demo_keys(stack)
    with Client(stack.base_url, api_key=keys["user:admin"]) as client:
        streets = client.create_dataset(
            "street scenes", "rendered streets with cars and plates", request_id="demo-ds-streets"
        )
        for index in range(DEMO_SCENES):
            scene = render_scene(index)
            client.upload_item(
                streets["name"],
                scene.png,
                file_name=scene.file_name,
                metadata={"time_of_day": scene.time_of_day},
            )
        client.create_project(
            {
                "display_name": "Plates and cars",
                "redundancy": 3,
                "datasets": [streets["name"]],
                # With Triton running, every scene gets plate suggestions and the queue learns.
                "model_assist": {
                    "prelabel": [{"model": "plate_detector", "label": "plate"}],
                    "strategy": "SAMPLING_STRATEGY_MARGIN",
                    "retrain_every": 10,
                },
            },
            street_schema(),
            request_id="demo-project-plates",
        )
        tickets = client.create_dataset(
            "support tickets", "short customer messages", request_id="demo-ds-tickets"
        )
        client.create_text_items(
            tickets["name"],
            [{"text": text, "metadata": {"source": "demo"}} for text, _ in ticket_texts(DEMO_TICKETS)],
            request_id="demo-tickets",
        )
        client.create_project(
            {
                "display_name": "Ticket routing",
                "redundancy": 2,
                "datasets": [tickets["name"]],
                "model_assist": {"strategy": "SAMPLING_STRATEGY_MARGIN", "retrain_every": 10},
            },
            ticket_schema(),
            request_id="demo-project-tickets",
        )
    return keys
