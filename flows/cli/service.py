"""``seqlm service start | stop | status | prefect | mlflow``: the service on PostgreSQL
(``flows.postgres``)."""

from __future__ import annotations

import argparse
import os

from flows import postgres


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from flows.cli import Parser

    cluster = Parser(add_help=False)
    cluster.add_argument(
        "--folder",
        default=postgres.DEFAULT_FOLDER,
        help="the cluster's folder: data/, password, postgres.log and the socket",
    )
    cluster.add_argument(
        "--port", type=int, default=postgres.DEFAULT_PORT, help="PostgreSQL's port on 127.0.0.1"
    )
    group = subparsers.add_parser(
        "service",
        help="the Prefect server and the MLflow tracking server on a local PostgreSQL",
        description="A PostgreSQL cluster in a project folder, listening on 127.0.0.1 only with "
        "a generated password, holding the databases of a Prefect server and an MLflow tracking "
        "server (artifacts in a folder, served by the MLflow server). Start the cluster, then "
        "each server in a terminal of its own; clients set PREFECT_API_URL and "
        "MLFLOW_TRACKING_URI to the servers.",
    )
    commands = group.add_subparsers(dest="service_command", metavar="COMMAND", required=True)
    parents = [cluster]
    start = commands.add_parser(
        "start",
        parents=parents,
        help="create the cluster if needed, start it and create its databases",
    )
    start.set_defaults(func=start_command)
    stop = commands.add_parser("stop", parents=parents, help="stop the cluster")
    stop.set_defaults(func=stop_command)
    status = commands.add_parser("status", parents=parents, help="say whether it is running")
    status.set_defaults(func=status_command)
    prefect = commands.add_parser(
        "prefect", parents=parents, help="run the Prefect server on the cluster (until stopped)"
    )
    prefect.add_argument(
        "--http-port", type=int, default=postgres.PREFECT_PORT, help="its port on 127.0.0.1"
    )
    prefect.set_defaults(func=prefect_command)
    mlflow = commands.add_parser(
        "mlflow",
        parents=parents,
        help="run the MLflow tracking server and UI on the cluster (until stopped)",
    )
    mlflow.add_argument(
        "--http-port", type=int, default=postgres.MLFLOW_PORT, help="its port on 127.0.0.1"
    )
    mlflow.add_argument(
        "--artifacts",
        default=postgres.DEFAULT_ARTIFACTS,
        help="the folder the server keeps run artifacts in",
    )
    mlflow.set_defaults(func=mlflow_command)


def _cluster(args: argparse.Namespace) -> postgres.Cluster:
    return postgres.cluster(args.folder, args.port)


def start_command(args: argparse.Namespace) -> int:
    c = _cluster(args)
    postgres.start(c)
    print(f"PostgreSQL on 127.0.0.1:{c.port} ({c.data}), databases {', '.join(postgres.DATABASES)}")
    return 0


def stop_command(args: argparse.Namespace) -> int:
    postgres.stop(_cluster(args))
    return 0


def status_command(args: argparse.Namespace) -> int:
    c = _cluster(args)
    up = postgres.running(c)
    print(f"PostgreSQL {c.data}: {'running' if up else 'stopped'}")
    return 0 if up else 3  # pg_ctl status's code for a stopped server


def prefect_command(args: argparse.Namespace) -> int:
    command, env = postgres.prefect_server(_cluster(args), args.http_port)
    os.execve(command[0], command, env)  # the server replaces this process: signals reach it


def mlflow_command(args: argparse.Namespace) -> int:
    command, env = postgres.mlflow_server(_cluster(args), args.http_port, args.artifacts)
    os.execve(command[0], command, env)
