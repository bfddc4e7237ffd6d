"""The services of annocloud, by short name, in start order: one place for the CLI, the process
runner, migrations and the devstack."""

SERVICES: tuple[str, ...] = ("ingestion", "tasks", "annotations", "qa", "export", "modelassist")
