"""The ``annocloud`` command: run the embedded server or the cluster topology, manage API keys and
migrations, call the REST API.

``annocloud serve`` runs every service plus the gateway in one process; ``annocloud run <service>``
runs one service of the cluster; ``annocloud stack up|down|status`` runs the whole cluster topology as
processes on 127.0.0.1 (``devstack``); ``annocloud migrate`` applies a service's Alembic migrations;
``annocloud keys create`` writes a key into the data directory's ``api_keys.json``; the other
commands use the Python SDK against ``--url`` (``ANNOCLOUD_URL``) with ``--api-key``
(``ANNOCLOUD_API_KEY``) and print JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from annocloud_server.common.service_names import SERVICES

if TYPE_CHECKING:
    from annocloud_sdk import Client

    from annocloud_server.devstack import ClusterStack
    from annocloud_server.embedded import EmbeddedStack

DEFAULT_URL = "http://127.0.0.1:8080"
ROLE_CHOICES = ("admin", "manager", "reviewer", "annotator")
FORMAT_CHOICES = ("coco", "pascal_voc", "yolo", "jsonl")
TASK_STATES = ("queued", "leased", "completed", "cancelled")
SERVICE_CHOICES = SERVICES

ClientFactory = Callable[[str, str], "Client"]


class CliError(Exception):
    """A usage problem found after parsing (bad file, missing key)."""


def _client_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--url", default=os.environ.get("ANNOCLOUD_URL", DEFAULT_URL), help="gateway base URL"
    )
    parent.add_argument(
        "--api-key", default=os.environ.get("ANNOCLOUD_API_KEY", ""), help="API key (env ANNOCLOUD_API_KEY)"
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="annocloud", description="annocloud annotation cloud")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    client = _client_options()

    serve = commands.add_parser("serve", help="run every service and the REST gateway in one process")
    serve.add_argument("--data-dir", type=Path, default=Path("./data"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--grpc-port", type=int, default=50051)
    serve.add_argument(
        "--demo", action="store_true", help="seed a demo organization, key, dataset and project"
    )
    serve.add_argument(
        "--triton",
        default=os.environ.get("ANNOCLOUD_TRITON_URL", "") or "auto",
        help="auto: start the local tritonserver (nvidia-pytriton wheel, scripts/infra/triton.sh); off: "
        "no model features; host:port: use that Triton server (default: env ANNOCLOUD_TRITON_URL, else auto)",
    )

    run = commands.add_parser(
        "run",
        help="cluster mode: run one service (or the gateway) in this process; settings from ANNOCLOUD_*",
    )
    run.add_argument("service", choices=[*SERVICE_CHOICES, "gateway"])

    migrate = commands.add_parser(
        "migrate", help="apply a service's Alembic migrations to PostgreSQL (one schema per service)"
    )
    migrate.add_argument("service", choices=[*SERVICE_CHOICES, "all"])
    migrate.add_argument(
        "--database-url",
        default=os.environ.get("ANNOCLOUD_DATABASE_URL", ""),
        help="SQLAlchemy URL; ?schema= picks the schema (default: the service's name); env ANNOCLOUD_DATABASE_URL",
    )
    migrate.add_argument("--revision", default="head", help="target revision (one service only)")

    _add_stack_parser(commands)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    create_key = keys.add_parser("create", help="create an API key and print it (shown once)")
    create_key.add_argument("--data-dir", type=Path, required=True)
    create_key.add_argument("--org", required=True, help="organization id")
    create_key.add_argument("--subject", required=True, help='who the key acts as, e.g. "key:ingest-bot"')
    create_key.add_argument(
        "--role", dest="roles", action="extend", nargs="+", required=True, choices=ROLE_CHOICES
    )

    datasets = commands.add_parser("datasets", help="datasets").add_subparsers(dest="action", required=True)
    ds_create = datasets.add_parser("create", parents=[client], help="create a dataset")
    ds_create.add_argument("display_name")
    ds_create.add_argument("--description", default="")
    ds_create.add_argument("--request-id", default="")
    ds_list = datasets.add_parser("list", parents=[client], help="list datasets (all pages)")
    ds_list.add_argument("--page-size", type=int, default=0)
    ds_get = datasets.add_parser("get", parents=[client], help="get a dataset")
    ds_get.add_argument("dataset")

    items = commands.add_parser("items", help="items").add_subparsers(dest="action", required=True)
    upload = items.add_parser("upload", parents=[client], help="upload files as items")
    upload.add_argument("dataset")
    upload.add_argument("files", nargs="+", type=Path)
    upload.add_argument("--metadata", default=None, help="JSON object attached to every file")
    items_list = items.add_parser("list", parents=[client], help="list the items of a dataset (all pages)")
    items_list.add_argument("dataset")
    items_list.add_argument("--page-size", type=int, default=0)

    projects = commands.add_parser("projects", help="projects").add_subparsers(dest="action", required=True)
    pr_create = projects.add_parser("create", parents=[client], help="create a project from a JSON file")
    pr_create.add_argument("--file", type=Path, required=True, help='{"project": {...}, "schema": {...}}')
    pr_create.add_argument("--request-id", default="")
    pr_list = projects.add_parser("list", parents=[client], help="list projects (all pages)")
    pr_list.add_argument("--page-size", type=int, default=0)
    pr_get = projects.add_parser("get", parents=[client], help="get a project")
    pr_get.add_argument("project")

    tasks = commands.add_parser("tasks", help="tasks").add_subparsers(dest="action", required=True)
    tasks_list = tasks.add_parser("list", parents=[client], help="list the tasks of a project (all pages)")
    tasks_list.add_argument("project")
    tasks_list.add_argument("--state", choices=TASK_STATES, default=None)
    tasks_list.add_argument("--page-size", type=int, default=0)

    exports = commands.add_parser("exports", help="exports").add_subparsers(dest="action", required=True)
    ex_create = exports.add_parser("create", parents=[client], help="start an export")
    ex_create.add_argument("project")
    ex_create.add_argument("--format", required=True, type=str.lower, choices=FORMAT_CHOICES)
    ex_create.add_argument("--request-id", default="")
    ex_create.add_argument("--version", default="", help="export this dataset version (id) instead")
    ex_create.add_argument("--wait", action="store_true", help="wait until the export is DONE or FAILED")
    ex_create.add_argument("--timeout", type=float, default=300)
    ex_get = exports.add_parser("get", parents=[client], help="get an export")
    ex_get.add_argument("project")
    ex_get.add_argument("export")
    ex_download = exports.add_parser("download", parents=[client], help="download an export's zip")
    ex_download.add_argument("project")
    ex_download.add_argument("export")
    ex_download.add_argument("-o", "--output", type=Path, required=True)

    versions = commands.add_parser("versions", help="dataset versions and the change feed").add_subparsers(
        dest="action", required=True
    )
    ver_create = versions.add_parser("create", parents=[client], help="snapshot the accepted labels")
    ver_create.add_argument("project")
    ver_create.add_argument("--name", default="", help="display name")
    ver_create.add_argument("--description", default="")
    ver_create.add_argument(
        "--split", default="0.8,0.1,0.1", help="train,validation,test fractions (default 0.8,0.1,0.1)"
    )
    ver_create.add_argument("--seed", type=int, default=0)
    ver_create.add_argument("--request-id", default="")
    ver_list = versions.add_parser("list", parents=[client], help="list dataset versions (all pages)")
    ver_list.add_argument("project")
    ver_get = versions.add_parser("get", parents=[client], help="get a dataset version")
    ver_get.add_argument("project")
    ver_get.add_argument("version")
    ver_items = versions.add_parser("items", parents=[client], help="items of a version with their split")
    ver_items.add_argument("project")
    ver_items.add_argument("version")
    ver_items.add_argument("--split", choices=("train", "validation", "test"), default=None)
    ver_diff = versions.add_parser("diff", parents=[client], help="what changed from BASE to VERSION")
    ver_diff.add_argument("project")
    ver_diff.add_argument("version")
    ver_diff.add_argument("base")
    ver_changes = versions.add_parser("changes", parents=[client], help="the change feed (one page)")
    ver_changes.add_argument("project")
    ver_changes.add_argument("--since-version", default="")
    ver_changes.add_argument("--cursor", default="", help="a resume_token from an earlier call")
    ver_changes.add_argument("--page-size", type=int, default=0)
    return parser


def _split_fractions(text: str) -> tuple[float, float, float]:
    try:
        train, validation, test = (float(part) for part in text.split(","))
    except ValueError as exc:
        raise CliError(f"--split must be three comma-separated numbers, not {text!r}") from exc
    return train, validation, test


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.isdigit() else default


def _add_stack_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stack = commands.add_parser(
        "stack",
        help="the cluster topology as processes on 127.0.0.1: 5 services + gateway on Kafka/PostgreSQL",
    ).add_subparsers(dest="action", required=True)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--stack-dir", type=Path, default=None, help="logs, pidfiles, data (default .cache/stack)"
    )
    up = stack.add_parser("up", parents=[where], help="start the stack and leave it running")
    up.add_argument(
        "--infra-dir",
        type=Path,
        default=Path(os.environ["ANNOCLOUD_INFRA_DIR"]) if os.environ.get("ANNOCLOUD_INFRA_DIR") else None,
        help="state of PostgreSQL/Kafka/Triton (default .cache/infra; env ANNOCLOUD_INFRA_DIR)",
    )
    up.add_argument("--pg-port", type=int, default=_env_int("ANNOCLOUD_PG_PORT", 15432))
    up.add_argument("--kafka-port", type=int, default=_env_int("ANNOCLOUD_KAFKA_PORT", 19092))
    up.add_argument(
        "--kafka-controller-port", type=int, default=_env_int("ANNOCLOUD_KAFKA_CONTROLLER_PORT", 19093)
    )
    up.add_argument("--triton-grpc-port", type=int, default=_env_int("ANNOCLOUD_TRITON_GRPC_PORT", 18001))
    up.add_argument("--no-triton", action="store_true", help="do not start Triton")
    up.add_argument("--port", type=int, default=8088, help="gateway HTTP port (0: a free one)")
    up.add_argument(
        "--grpc-base-port",
        type=int,
        default=50061,
        help="ingestion, tasks, annotations, qa, export: +0..+4 (0: free ports)",
    )
    up.add_argument(
        "--metrics-base-port",
        type=int,
        default=9461,
        help="/metrics of the 5 services: +0..+4 (0: free ports; the gateway serves it on its HTTP port)",
    )
    up.add_argument("--database", default="annocloud", help="PostgreSQL database (created when missing)")
    up.add_argument("--namespace", default="", help="Kafka namespace (prefix of topics and groups)")
    up.add_argument("--no-demo", action="store_true", help="do not seed the demo organization and keys")
    up.add_argument("--timeout", type=float, default=180, help="seconds to wait for everything to serve")
    down = stack.add_parser("down", parents=[where], help="stop the stack's processes (infra stays up)")
    down.add_argument("--timeout", type=float, default=30, help="seconds before SIGKILL")
    stack.add_parser("status", parents=[where], help="what runs, and whether it serves (exit 3 if not all)")


def _default_client(url: str, api_key: str) -> Client:
    from annocloud_sdk import Client

    return Client(url, api_key)


def _print(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}") from exc


def _serve(args: argparse.Namespace) -> int:
    from annocloud_server.embedded import serve

    serve(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        demo=args.demo,
        triton=args.triton,
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from annocloud_server.process import run_gateway, run_service

    if args.service == "gateway":
        run_gateway()
    else:
        run_service(args.service)
    return 0


def _migrate(args: argparse.Namespace, out: TextIO) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from annocloud_server.common import migrations
    from annocloud_server.common.db import schema_of

    url = args.database_url
    if not url:
        raise CliError("a database URL is required: --database-url or ANNOCLOUD_DATABASE_URL")
    services = list(migrations.SERVICES) if args.service == "all" else [args.service]
    if args.service == "all" and (schema_of(url) or args.revision != "head"):
        raise CliError(
            "`migrate all` takes a URL without ?schema= and no --revision (each service has its own)"
        )
    try:
        for service in services:
            migrations.upgrade(service, url, args.revision)
            schema = migrations.schema_for(service, url)
            out.write(f"{service}: schema {schema} at revision {migrations.current(service, url)}\n")
    except (ValueError, SQLAlchemyError) as exc:
        raise CliError(f"migrate {args.service}: {exc}") from exc
    return 0


def _stack(args: argparse.Namespace, out: TextIO) -> int:
    from annocloud_server import devstack

    stack_dir = args.stack_dir or devstack.DEFAULT_STACK_DIR
    if args.action == "down":
        outcome = devstack.stop_detached(stack_dir, args.timeout)
        for name, what in outcome.items():
            out.write(f"{name}: {what}\n")
        if not outcome:
            out.write(f"no stack process runs from {stack_dir}\n")
        return 0
    if args.action == "status":
        return _stack_status(stack_dir, out)
    running = devstack.detached_pids(stack_dir)
    if running:
        if set(running) == set(devstack.PROCESSES):
            out.write(f"the stack in {stack_dir} is already running\n")
            return _stack_status(stack_dir, out)
        raise CliError(
            f"part of a stack runs from {stack_dir} ({', '.join(running)}): `annocloud stack down` first"
        )
    infra_dir = args.infra_dir or devstack.DEFAULT_INFRA_DIR
    stack = devstack.ClusterStack(
        stack_dir,
        postgres=devstack.PostgresServer(port=args.pg_port, infra_dir=infra_dir),
        kafka=devstack.KafkaBroker(
            port=args.kafka_port, controller_port=args.kafka_controller_port, infra_dir=infra_dir
        ),
        triton=False
        if args.no_triton
        else devstack.TritonServer(
            grpc_port=args.triton_grpc_port,
            http_port=_env_int("ANNOCLOUD_TRITON_HTTP_PORT", 18000),
            metrics_port=_env_int("ANNOCLOUD_TRITON_METRICS_PORT", 18002),
            infra_dir=infra_dir,
        ),
        database=args.database,
        kafka_namespace=args.namespace,
        http_port=args.port,
        grpc_ports={
            s: args.grpc_base_port and args.grpc_base_port + i for i, s in enumerate(devstack.SERVICES)
        },
        metrics_ports={
            s: args.metrics_base_port and args.metrics_base_port + i for i, s in enumerate(devstack.SERVICES)
        },
        start_timeout=args.timeout,
        detach=True,
    )
    began = time.monotonic()
    try:
        stack.start()
    except devstack.StackError as exc:
        raise CliError(f"the stack did not start (logs in {stack.log_dir}):\n{exc}") from exc
    up_seconds = time.monotonic() - began
    info = stack.describe()
    lines = [
        f"annocloud cluster stack is up in {up_seconds:.1f}s: 6 service processes + the gateway "
        "(stop them: annocloud stack down)",
        f"  REST API + docs : {stack.base_url}/docs",
        "  gRPC            : " + ", ".join(f"{s}={a}" for s, a in stack.addresses.items()),
        "  metrics         : "
        + ", ".join(f"{s}={a}" for s, a in stack.metrics_addresses.items())
        + f", gateway={stack.base_url}/metrics",
        f"  PostgreSQL      : {stack.database_url} (one schema per service)",
        f"  Kafka           : {stack.kafka_bootstrap}"
        + (f" (namespace {stack.kafka_namespace})" if stack.kafka_namespace else ""),
        f"  Triton          : {info['triton'] or 'not started'}",
        f"  logs, pids, data: {stack.log_dir}, {stack.pid_dir}, {stack.data_dir}",
    ]
    if not args.no_demo:
        lines += _seed_stack_demo(stack)
    out.write("\n".join(lines) + "\n")
    return 0


def _seed_stack_demo(stack: ClusterStack) -> list[str]:
    from annocloud_server.demo_seed import seed_demo

    began = time.monotonic()
    # seed_demo only uses base_url, api_keys and data_dir, which a ClusterStack has too.
    keys = seed_demo(cast("EmbeddedStack", stack))
    lines = [
        f"  demo data seeded in {time.monotonic() - began:.1f}s; API keys ('Authorization: Bearer <key>'):"
    ]
    lines += [f"    {subject:<11} {key}" for subject, key in keys.items()]
    lines.append(f"  try: curl -H 'Authorization: Bearer {keys['user:admin']}' {stack.base_url}/v1/projects")
    return lines


def _stack_status(stack_dir: Path, out: TextIO) -> int:
    from annocloud_server import devstack

    state = devstack.read_state(stack_dir)
    if state is None:
        out.write(f"no stack was started from {stack_dir}\n")
        return 3
    pids = devstack.detached_pids(stack_dir)
    healthy = 0
    for name in devstack.PROCESSES:
        if name == devstack.GATEWAY:
            where, serving = state["base_url"], devstack.http_ok(f"{state['base_url']}/readyz")
        else:
            where = state["grpc"][name]
            serving = devstack.health_status(where) == "SERVING"
        pid = f"pid {pids[name]}" if name in pids else "not running"
        healthy += bool(serving and name in pids)
        out.write(f"{name:<12} {pid:<12} {where:<24} {'serving' if serving else 'NOT serving'}\n")
    return 0 if healthy == len(devstack.PROCESSES) else 3


def _create_key(args: argparse.Namespace, out: TextIO) -> int:
    from annocloud_server.gateway.apikeys import ApiKeyStore

    try:
        key = ApiKeyStore(args.data_dir).create_key(args.org, args.subject, args.roles)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    out.write(key + "\n")
    return 0


def _run_client(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    command, action = args.command, args.action
    if command == "datasets":
        if action == "create":
            _print(client.create_dataset(args.display_name, args.description, args.request_id), out)
        elif action == "list":
            _print(list(client.iter_datasets(args.page_size)), out)
        else:
            _print(client.get_dataset(args.dataset), out)
    elif command == "items":
        if action == "upload":
            metadata = None
            if args.metadata is not None:
                try:
                    metadata = json.loads(args.metadata)
                except ValueError as exc:
                    raise CliError(f"--metadata is not valid JSON: {exc}") from exc
                if not isinstance(metadata, dict):
                    raise CliError("--metadata must be a JSON object")
            for path in args.files:
                if not path.is_file():
                    raise CliError(f"{path} is not a file")
            _print([client.upload_item(args.dataset, path, metadata=metadata) for path in args.files], out)
        else:
            _print(list(client.iter_items(args.dataset, args.page_size)), out)
    elif command == "projects":
        if action == "create":
            spec = _load_json(args.file)
            if not isinstance(spec, dict):
                raise CliError(f"{args.file} must hold a JSON object")
            project = spec.get("project", spec) if "project" in spec else spec
            schema = spec.get("schema")
            request_id = args.request_id or str(spec.get("request_id", ""))
            _print(client.create_project(project, schema, request_id), out)
        elif action == "list":
            _print(list(client.iter_projects(args.page_size)), out)
        else:
            _print(client.get_project(args.project), out)
    elif command == "tasks":
        _print(list(client.iter_tasks(args.project, args.state, args.page_size)), out)
    elif command == "exports":
        if action == "create":
            job = client.create_export(args.project, args.format, args.request_id, args.version)
            if args.wait:
                job = client.wait_for_export(args.project, job["name"], timeout=args.timeout)
            _print(job, out)
        elif action == "get":
            _print(client.get_export(args.project, args.export), out)
        else:
            path = client.download_export(args.project, args.export, args.output)
            _print({"path": str(path), "size_bytes": path.stat().st_size}, out)
    elif command == "versions":
        if action == "create":
            train, validation, test = _split_fractions(args.split)
            version = client.create_dataset_version(
                args.project,
                args.name,
                args.description,
                train=train,
                validation=validation,
                test=test,
                seed=args.seed,
                request_id=args.request_id,
            )
            _print(version, out)
        elif action == "list":
            _print(list(client.iter_dataset_versions(args.project)), out)
        elif action == "get":
            _print(client.get_dataset_version(args.project, args.version), out)
        elif action == "items":
            _print(list(client.iter_dataset_version_items(args.project, args.version, args.split)), out)
        elif action == "diff":
            _print(list(client.iter_dataset_version_diff(args.project, args.version, args.base)), out)
        else:
            page = client.list_changes(args.project, args.since_version, args.page_size, args.cursor)
            _print(page, out)
    return 0


def main(
    argv: Sequence[str] | None = None,
    *,
    client_factory: ClientFactory | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Runs the command; returns the exit code (0 ok, 1 error, 2 usage)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "run":
            return _run(args)
        if args.command == "keys":
            return _create_key(args, out)
        if args.command == "migrate":
            return _migrate(args, out)
        if args.command == "stack":
            return _stack(args, out)
        if not args.api_key:
            raise CliError("an API key is required: --api-key or ANNOCLOUD_API_KEY")
        import httpx
        from annocloud_sdk import ApiError

        client = (client_factory or _default_client)(args.url, args.api_key)
        try:
            return _run_client(args, client, out)
        except ApiError as exc:
            err.write(f"error: {exc.status_code} {exc.reason}: {exc.message}\n")
            return 1
        except httpx.HTTPError as exc:
            err.write(f"error: cannot reach {args.url}: {exc}\n")
            return 1
        except TimeoutError as exc:
            err.write(f"error: {exc}\n")
            return 1
        finally:
            client.close()
    except CliError as exc:
        err.write(f"error: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
