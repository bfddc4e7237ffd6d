"""Tasks service: projects, versioned label schemas, tasks, queues and leases."""
