"""Private Redis and Postgres servers started from the system's binaries under a state folder.

Used by ``kai-inventory demo`` (and by tests that need a server of their own to kill or
restart). Each server is a child process that dies with its owner.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class LocalStackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalStackError(f"server on port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise LocalStackError(f"nothing answers on port {port} after {timeout_s}s")


@dataclass
class RedisServer:
    port: int
    directory: Path
    appendonly: bool = False
    proc: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise LocalStackError("redis-server is not installed (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--maxmemory-policy",
                "noeviction",
                "--logfile",
                str(self.directory / "redis.log"),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches the owner, which stops it
        )
        _wait_for_port(self.port, 10, self.proc)
        return self

    def stop(self, sig: int | None = None) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if sig is None:
            self.proc.terminate()
        else:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@contextlib.contextmanager
def private_redis(appendonly: bool = False) -> Iterator[RedisServer]:
    """A throwaway ``redis-server`` on a free loopback port, in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="kai-redis-") as tmp:
        server = RedisServer(free_port(), Path(tmp), appendonly=appendonly).start()
        try:
            yield server
        finally:
            server.stop()


def _pg_bin(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    found = shutil.which(name)
    if found is None:
        raise LocalStackError(f"{name} is not installed (apt-get install postgresql)")
    return found


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """Postgres refuses to run as root; drop to the `postgres` system user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass
class PostgresServer:
    port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "kai") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
            for parent in self.directory.resolve().parents:
                if not parent.stat().st_mode & 0o001:
                    raise LocalStackError(
                        f"{parent} is not searchable by the postgres user; choose another folder"
                    )
        if not (self.data / "PG_VERSION").exists():
            subprocess.run(
                _as_postgres_user(
                    [_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        self.proc = subprocess.Popen(
            _as_postgres_user(
                [
                    _pg_bin("postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.directory}",
                    "-c",
                    "fsync=on",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=open(self.directory / "postgres.log", "ab"),  # noqa: SIM115
        )
        _wait_for_port(self.port, 30, self.proc)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ok = subprocess.run(
                [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                check=False,
            )
            if ok.returncode == 0:
                return
            time.sleep(0.1)
        raise LocalStackError(f"postgres on port {self.port} is not ready")

    def create_database(self, name: str) -> None:
        if not name.replace("_", "").isalnum():
            raise LocalStackError(f"unsafe database name {name!r}")
        psql = [_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        exists = subprocess.run(
            [*psql, "-Atc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],  # noqa: S608  # nosec B608
            check=True,
            capture_output=True,
            text=True,
        )
        if exists.stdout.strip() != "1":
            subprocess.run([*psql, "-qc", f'CREATE DATABASE "{name}"'], check=True)

    def stop(self, mode: str = "fast") -> None:
        """Stop with pg_ctl's mode: smart, fast or immediate."""
        if self.proc is None or self.proc.poll() is not None:
            return
        subprocess.run(
            _as_postgres_user([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
        )
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@contextlib.contextmanager
def running(*servers: RedisServer | PostgresServer) -> Iterator[None]:
    try:
        for server in servers:
            server.start()
        yield
    finally:
        for server in reversed(servers):
            server.stop()
