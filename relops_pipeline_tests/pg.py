"""A throwaway PostgreSQL server for tests: the distribution's server binaries, a fresh cluster
in a temporary folder, listening on 127.0.0.1 only, stopped and removed by the caller.

PostgreSQL refuses to run as root. When the tests run as root (CI containers), initdb and the
server run as an unprivileged system user (`postgres`, which Debian's package creates, else
`nobody`) through runuser or setpriv, in a folder of its own under the system temp dir: pytest's
tmp_path sits under a root-only 0700 folder the server user cannot enter.

initdb and pg_ctl run in process groups of their own, reaped when they return or time out
(procs.run); the postmaster, which pg_ctl detaches into a session of its own, is stopped by
`stop()`. Every timeout is multiplied by $RELOPS_TEST_TIMEOUT_SCALE (procs.scaled).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from relops_pipeline_tests.procs import run, scaled

SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "relops"
# A Unix socket path is limited to 107 bytes (sun_path) including ".s.PGSQL.<port>".
_MAX_SOCKET_DIR = 80


def find_server_bin() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: Debian's newest /usr/lib/postgresql/N/bin,
    else the folder of `initdb` on PATH when pg_ctl and postgres sit beside it; None if absent."""

    def complete(d: Path) -> bool:
        return all(os.access(d / b, os.X_OK) for b in SERVER_BINARIES)

    def version(d: str) -> tuple:
        return tuple(int(x) for x in re.findall(r"\d+", Path(d).parent.name)) or (0,)

    for d in sorted(glob.glob(DEBIAN_BIN_GLOB), key=version, reverse=True):
        if complete(Path(d)):
            return Path(d)
    on_path = shutil.which("initdb")
    if on_path:
        d = Path(on_path).resolve().parent
        if complete(d):
            return d
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


class PostgresServer:
    """One PostgreSQL cluster: `start()` runs initdb and starts the server on 127.0.0.1:`port`
    with password authentication for the superuser `relops`; `stop()` stops it (safe to call
    twice) and removes the folder it created outside `workdir`. The server log is copied to
    `workdir/postgres.log` on stop."""

    def __init__(self, workdir: Path, bin_dir: Path, *, port: int | None = None, password: str = "relops-test-pw"):
        self.workdir = Path(workdir)
        self.bin_dir = Path(bin_dir)
        self.port = port or free_port()
        self.password = password
        self.user = SUPERUSER
        self._as_root = os.geteuid() == 0
        self._run_as = _unprivileged_user() if self._as_root else None
        self._own_base: Path | None = None
        self.base: Path | None = None
        self._started = False

    # -- paths --------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    def log_tail(self, n: int = 4000) -> str:
        """The end of the server log (for failure messages)."""
        for f in (self.log_file if self.base else None, self.workdir / "postgres.log"):
            if f is not None and f.exists():
                return f.read_text(errors="replace")[-n:]
        return "(no server log)"

    # -- commands -----------------------------------------------------------------------------
    def _cmd(self, argv: list[str]) -> list[str]:
        if not self._as_root:
            return argv
        if shutil.which("runuser"):
            return ["runuser", "-u", self._run_as.pw_name, "--", *argv]
        if shutil.which("setpriv"):
            return ["setpriv", f"--reuid={self._run_as.pw_uid}", f"--regid={self._run_as.pw_gid}", "--init-groups", *argv]
        raise RuntimeError("running as root, and neither runuser nor setpriv is available to drop privileges for PostgreSQL")

    def _run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        # cwd: the server user may not be able to enter the caller's working directory.
        proc = run(self._cmd(argv), cwd=self.base, capture_output=True, text=True, timeout=scaled(timeout),
                   env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC"})
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}\n{self.log_tail()}")
        return proc

    def start(self) -> PostgresServer:
        """initdb a new cluster and start the server; returns when it accepts connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            self._own_base = Path(tempfile.mkdtemp(prefix="relops-pg-"))
            self.base = self._own_base
            os.chown(self.base, self._run_as.pw_uid, self._run_as.pw_gid)
        else:
            self.base = self.workdir
        socket_dir = self.base / "sock"
        socket_dir.mkdir()
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._as_root:
            for p in (socket_dir, pwfile):
                os.chown(p, self._run_as.pw_uid, self._run_as.pw_gid)
        self._run([str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user, f"--pwfile={pwfile}",
                   "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--locale=C",
                   "--no-sync"], timeout=120)
        pwfile.unlink()
        sockets = str(socket_dir) if len(str(socket_dir)) <= _MAX_SOCKET_DIR else "''"
        # Loopback only; durability off (a test cluster is thrown away).
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={sockets} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        self._started = True  # from here on stop() must run, even if start fails half-way
        self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                   "-t", str(round(scaled(60))), "-o", options, "start"], timeout=90)
        self._wait_ready(30)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + scaled(timeout_s)
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL is not accepting connections on 127.0.0.1:{self.port}:\n{self.log_tail()}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server (fast shutdown; SIGKILL of the postmaster as a last resort), keep its
        log in `workdir`, and remove a folder created outside `workdir`."""
        if self.base is None:
            return
        try:
            if self._started:
                self._started = False
                try:
                    self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                               "-t", str(round(scaled(30))), "stop"], timeout=45)
                except (RuntimeError, subprocess.TimeoutExpired):
                    self._kill_postmaster()
        finally:
            if self.log_file.exists() and self.base != self.workdir:
                shutil.copyfile(self.log_file, self.workdir / "postgres.log")
            if self._own_base is not None:
                shutil.rmtree(self._own_base, ignore_errors=True)
                self._own_base = None

    def _kill_postmaster(self) -> None:
        """SIGKILL to the postmaster and its backends (its process group: pg_ctl starts it in a
        session of its own), or to the postmaster alone if it leads no group."""
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().splitlines()[0])
            try:
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # -- clients ------------------------------------------------------------------------------
    def connect(self, dbname: str = "postgres"):
        """A psycopg2 connection (autocommit) as the superuser over TCP."""
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname=dbname,
                               connect_timeout=max(1, round(scaled(10))))
        con.autocommit = True
        return con

    def create_database(self, name: str) -> None:
        """CREATE DATABASE `name` (a plain identifier)."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain identifier: {name!r}")
        con = self.connect()
        try:
            con.cursor().execute(f"CREATE DATABASE {name}")
        finally:
            con.close()

    def dagster_env(self, db_name: str) -> dict[str, str]:
        """The DAGSTER_PG_* variables docs/dagster.postgres.yaml reads."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": db_name,
        }
