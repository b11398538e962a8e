"""A private Redis Cluster on loopback, started from the system's ``redis-server`` binary.

Used by the tests (one 3-master cluster per test session), the benchmark and anyone who wants
to try ``REDIS_URL=redis+cluster://...`` on one machine:

    python -m kai_inventory.localcluster      # prints the URL, Ctrl-C stops it

Each node runs ``cluster-enabled yes`` with no persistence in its own folder; the slots are
assigned with ``redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes``. A node can be
restarted *empty* (same node id and slots, no data): what a shard looks like after losing its
data, for the per-shard rebuild tests.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kai_inventory.localstack import LocalStackError, RedisServer


class ClusterStartError(LocalStackError):
    pass


def _free_ports(count: int) -> list[int]:
    """Ports p such that p and p + 10000 (the cluster bus) are both free."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def _cli(port: int, *args: str, timeout: float = 10) -> str:
    binary = shutil.which("redis-cli") or "redis-cli"
    out = subprocess.run(
        [binary, "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return out.stdout + out.stderr


CLUSTER_ARGS = (
    "--cluster-enabled", "yes",
    "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", "1000",
    "--cluster-require-full-coverage", "no",
)  # fmt: skip


@dataclass
class ClusterNode(RedisServer):
    """One master: a private ``redis-server`` (see ``localstack``) with cluster mode on. It is
    stopped with SIGKILL, as a crashed shard would be."""

    extra_args: tuple[str, ...] = CLUSTER_ARGS

    def stop(self, sig: int | None = signal.SIGKILL) -> None:
        super().stop(sig)


@dataclass
class LocalCluster:
    nodes: list[ClusterNode] = field(default_factory=list)
    root: Path | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def start(self, masters: int = 3) -> LocalCluster:
        if shutil.which("redis-cli") is None:
            raise ClusterStartError("redis-cli is not installed")
        self._tmp = tempfile.TemporaryDirectory(prefix="kai-cluster-")
        self.root = Path(self._tmp.name)
        self.nodes = [ClusterNode(p, self.root / str(p)) for p in _free_ports(masters)]
        try:
            for node in self.nodes:
                node.start()
            out = _cli(
                self.nodes[0].port,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
                timeout=60,
            )
            if "[OK] All 16384 slots covered" not in out:
                raise ClusterStartError(f"redis-cli --cluster create failed:\n{out}")
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout_s: float = 30) -> None:
        """Until every node reports cluster_state:ok and knows every other node."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            infos = [_cli(n.port, "CLUSTER", "INFO") for n in self.nodes]
            if all("cluster_state:ok" in i for i in infos) and all(
                f"cluster_known_nodes:{len(self.nodes)}" in i for i in infos
            ):
                return
            time.sleep(0.1)
        raise ClusterStartError("cluster did not reach cluster_state:ok")

    def node_of_port(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def restart_empty(self, port: int) -> None:
        """Kill one master and start it again with its cluster config but no data: the shard
        comes back owning the same slots, empty (as after a restart without persistence)."""
        node = self.node_of_port(port)
        node.stop()
        for name in ("dump.rdb", "appendonly.aof"):
            with contextlib.suppress(FileNotFoundError):
                (node.directory / name).unlink()
        node.start()
        self.wait_ok()

    def node_id(self, port: int) -> str:
        return _cli(port, "CLUSTER", "MYID").strip()

    def owner_of_slot(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for line in _cli(self.nodes[0].port, "CLUSTER", "NODES").splitlines():
            parts = line.split()
            if len(parts) < 9 or "master" not in parts[2]:
                continue
            for spec in parts[8:]:
                if spec.startswith("["):
                    continue
                lo, _, hi = spec.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return int(parts[1].split("@")[0].rsplit(":", 1)[1])
        raise ClusterStartError(f"no master serves slot {slot}")

    def move_slot(self, slot: int, to_port: int) -> None:
        """Reshard one slot with its keys to another master, the way redis-cli does it
        (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE): clients with the old map get MOVED/ASK."""
        from_port = self.owner_of_slot(slot)
        if from_port == to_port:
            return
        src, dst = self.node_id(from_port), self.node_id(to_port)
        _cli(to_port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", src)
        _cli(from_port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", dst)
        while True:
            keys = _cli(from_port, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split()
            if not keys:
                break
            _cli(from_port, "MIGRATE", "127.0.0.1", str(to_port), "", "0", "5000", "KEYS", *keys)
        for port in (to_port, from_port, *(n.port for n in self.nodes)):
            _cli(port, "CLUSTER", "SETSLOT", str(slot), "NODE", dst)
        self.wait_ok()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


@contextlib.contextmanager
def local_cluster(masters: int = 3) -> Iterator[LocalCluster]:
    cluster = LocalCluster().start(masters)
    try:
        yield cluster
    finally:
        cluster.stop()


def main() -> int:
    with local_cluster() as cluster:
        print(cluster.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
