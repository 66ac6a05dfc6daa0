"""The service on PostgreSQL: a database cluster in a project folder (``.pg/``) that the Prefect
server and the MLflow tracking server keep their records in, instead of SQLite files.

The cluster listens on 127.0.0.1 only, with its socket in its own folder, and every connection
needs the password ``start`` generates into ``<folder>/password`` (mode 600): other users of the
machine cannot reach the databases. PostgreSQL refuses to run as root: run as root, the cluster
runs as the ``postgres`` user, which then owns the folder. The servers started here are the
project's own commands (``prefect server start``, ``mlflow server``) with the database URLs in
their environment, where other users cannot read them (a command line they can).
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from seqlm.errors import SeqlmError, first_line

DEFAULT_FOLDER = ".pg"
DEFAULT_PORT = 5433  # beside a system PostgreSQL on 5432
ROLE = "seqlm"  # the cluster's superuser, owner of both databases
DATABASES = ("prefect", "mlflow")
PREFECT_PORT = 4200
MLFLOW_PORT = 5000
DEFAULT_ARTIFACTS = "mlruns/artifacts"
SYSTEM_USER = "postgres"  # who runs the cluster when we are root
BIN = Path(sys.executable).parent  # the venv's prefect and mlflow commands


@dataclass(frozen=True)
class Cluster:
    folder: Path
    port: int = DEFAULT_PORT

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def password_file(self) -> Path:
        return self.folder / "password"

    def url(self, database: str, driver: str = "") -> str:
        """The URL of one database, for SQLAlchemy with a ``driver`` named (its default for plain
        ``postgresql://`` is psycopg 3, which the project does not install), else for libpq."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        password = quote(self.password_file.read_text().strip(), safe="")
        return f"{scheme}://{ROLE}:{password}@127.0.0.1:{self.port}/{database}"

    @property
    def prefect_url(self) -> str:
        return self.url("prefect", "asyncpg")  # the Prefect server's async driver

    @property
    def mlflow_url(self) -> str:
        return self.url("mlflow", "psycopg2")


def cluster(folder: str | Path = DEFAULT_FOLDER, port: int = DEFAULT_PORT) -> Cluster:
    if not 0 < port < 65536:
        raise SeqlmError(f"--port {port}: not a TCP port")
    return Cluster(Path(folder).resolve(), port)


def pg_program(name: str) -> str:
    """A PostgreSQL server program: on PATH, else Debian's newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3])
    )
    if not versions:
        raise SeqlmError(
            f"PostgreSQL's {name} not found on PATH or in /usr/lib/postgresql/*/bin: install the "
            "server (Debian: apt-get install postgresql)"
        )
    return str(versions[-1])


def _as_owner(args: list[str]) -> list[str]:
    return ["runuser", "-u", SYSTEM_USER, "--", *args] if os.geteuid() == 0 else args


def _run(args: list[str], what: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(_as_owner(args), capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or [f"status {done.returncode}"]
        raise SeqlmError(f"{what}: {lines[-1]}")
    return done


def init(c: Cluster) -> None:
    """Create the cluster (its superuser's password first) unless it exists. initdb writes a
    temporary folder, renamed into place: a failed set-up leaves no half cluster behind."""
    if (c.data / "PG_VERSION").exists():
        return
    c.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not c.password_file.exists():
        c.password_file.touch(mode=0o600)
        c.password_file.write_text(secrets.token_urlsafe(24) + "\n")
    work = c.folder / ".data-tmp"
    shutil.rmtree(work, ignore_errors=True)
    if os.geteuid() == 0:
        shutil.chown(c.folder, SYSTEM_USER, SYSTEM_USER)
        shutil.chown(c.password_file, SYSTEM_USER, SYSTEM_USER)
    initdb = [pg_program("initdb"), "-D", str(work), "-U", ROLE, "--pwfile", str(c.password_file)]
    options = ["--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-instructions"]
    try:
        _run([*initdb, *options], f"initdb {work}")
    except SeqlmError:
        shutil.rmtree(work, ignore_errors=True)
        raise
    work.rename(c.data)


def running(c: Cluster) -> bool:
    if not (c.data / "PG_VERSION").exists():
        return False
    status = subprocess.run(
        _as_owner([pg_program("pg_ctl"), "-D", str(c.data), "status"]), capture_output=True
    )
    return status.returncode == 0


def start(c: Cluster) -> None:
    """Create the cluster if needed, start it on 127.0.0.1:port and create the databases."""
    init(c)
    if not running(c):
        log = c.folder / "postgres.log"
        server = f"-p {c.port} -k {shlex.quote(str(c.folder))} -c listen_addresses=127.0.0.1"
        pg_ctl = [pg_program("pg_ctl"), "-D", str(c.data), "-l", str(log), "-o", server]
        try:
            _run([*pg_ctl, "-w", "start"], str(c.data))
        except SeqlmError:  # pg_ctl says only "Examine the log output"
            raise SeqlmError(
                f"PostgreSQL on 127.0.0.1:{c.port}: {_failure(log)} (log: {log})"
            ) from None
    create_databases(c)


def _failure(log: Path) -> str:
    """Why the server stopped: the last FATAL line of its log."""
    fatal = [line for line in log.read_text().splitlines() if "FATAL:" in line]
    return fatal[-1].split("FATAL:", 1)[1].strip() if fatal else "did not start"


def stop(c: Cluster) -> None:
    if running(c):
        _run([pg_program("pg_ctl"), "-D", str(c.data), "-m", "fast", "-w", "stop"], str(c.data))


def create_databases(c: Cluster) -> None:
    import psycopg2

    try:
        connection = psycopg2.connect(
            host="127.0.0.1",
            port=c.port,
            user=ROLE,
            password=c.password_file.read_text().strip(),
            dbname="postgres",
            connect_timeout=10,
        )
    except psycopg2.OperationalError as e:
        raise SeqlmError(f"PostgreSQL 127.0.0.1:{c.port}: {first_line(e)}") from None
    connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with connection.cursor() as cursor:
            for name in DATABASES:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE DATABASE {name} OWNER {ROLE}")
    finally:
        connection.close()


def _ready(c: Cluster) -> None:
    if not running(c):
        raise SeqlmError(f"PostgreSQL {c.data}: not running; start it with `seqlm service start`")


def prefect_server(c: Cluster, port: int = PREFECT_PORT) -> tuple[list[str], dict[str, str]]:
    """The Prefect server's command on 127.0.0.1:port and its environment (the database URL)."""
    _ready(c)
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return command, os.environ | {"PREFECT_SERVER_DATABASE_CONNECTION_URL": c.prefect_url}


def mlflow_server(
    c: Cluster, port: int = MLFLOW_PORT, artifacts: str | Path = DEFAULT_ARTIFACTS
) -> tuple[list[str], dict[str, str]]:
    """The MLflow tracking server's command on 127.0.0.1:port and its environment: runs in the
    ``mlflow`` database, artifacts in the folder ``artifacts``, served through the server (so
    clients need only MLFLOW_TRACKING_URI), no job runners."""
    _ready(c)
    folder = Path(artifacts).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1", "--serve-artifacts", "--artifacts-destination", str(folder)]
    env = os.environ | {"MLFLOW_BACKEND_STORE_URI": c.mlflow_url}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return command, env
