"""An asyncio TCP fault proxy (the part of Toxiproxy the fault tests need).

``FaultProxy(upstream_port)`` listens on a free port and forwards to ``127.0.0.1:upstream``.
It runs its own event loop in a daemon thread, so the faults it injects never depend on how
busy the test's own loop is, and it can be switched while a workload runs:

- ``pass``      forward bytes both ways;
- ``latency``   every chunk, both directions, is delivered ``latency_s`` late (order kept);
- ``blackhole`` accept connections, never answer: nothing is forwarded either way (existing
                connections stall too) and nothing is closed;
- ``reset``     every current connection is reset (RST) at the switch, and new ones are reset
                as soon as they are accepted;
- ``cut``       the next reply chunk from upstream on each connection is delivered only in
                part (half of it, at least one byte short), then the connection is reset.

``set_mode`` is thread-safe. ``stats`` counts connections and bytes per direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

MODES = ("pass", "latency", "blackhole", "reset", "cut")


@dataclass
class ProxyStats:
    accepted: int = 0
    reset: int = 0
    cut: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    modes: list[tuple[float, str]] = field(default_factory=list)


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN (SO_LINGER 0), like a crashed peer or a middlebox."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    def __init__(
        self,
        proxy: FaultProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.c_reader, self.c_writer = client
        self.u_writer: asyncio.StreamWriter | None = None
        self.closed = False

    def kill(self) -> None:
        if self.closed:
            return
        self.closed = True
        _rst(self.c_writer)
        if self.u_writer is not None:
            _rst(self.u_writer)

    async def run(self) -> None:
        p = self.proxy
        if p.mode == "reset":
            p.stats.reset += 1
            self.kill()
            return
        try:
            u_reader, self.u_writer = await asyncio.open_connection(
                p.upstream_host, p.upstream_port
            )
        except OSError:
            self.kill()  # upstream down: the client sees its connection reset
            return
        up = asyncio.create_task(self._pump(self.c_reader, self.u_writer, downstream=False))
        down = asyncio.create_task(self._pump(u_reader, self.c_writer, downstream=True))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            for task in (up, down):
                with contextlib.suppress(BaseException):
                    await task
            if not self.closed:
                self.closed = True
                for w in (self.c_writer, self.u_writer):
                    with contextlib.suppress(Exception):
                        w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, downstream: bool
    ) -> None:
        p = self.proxy
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except (ConnectionError, OSError):
                    data = b""
                if not data:
                    break
                while p.mode == "blackhole" and not self.closed:
                    await asyncio.sleep(0.02)  # swallow: hold the bytes, answer nothing
                if self.closed:
                    break
                if p.mode == "reset":
                    p.stats.reset += 1
                    self.kill()
                    break
                if p.mode == "cut" and downstream:
                    keep = max(0, min(len(data) - 1, len(data) // 2))
                    p.stats.cut += 1
                    await queue.put((time.monotonic(), data[:keep]))
                    await queue.put(None)
                    await sender
                    self.kill()
                    break
                delay = p.latency_s if p.mode == "latency" else 0.0
                if downstream:
                    p.stats.bytes_down += len(data)
                else:
                    p.stats.bytes_up += len(data)
                await queue.put((time.monotonic() + delay, data))
        finally:
            if not sender.done():
                await queue.put(None)
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(sender, timeout=max(1.0, p.latency_s + 1))

    async def _send(
        self, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            item = await queue.get()
            if item is None or self.closed:
                return
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            while self.proxy.mode == "blackhole" and not self.closed:
                await asyncio.sleep(0.02)
            if self.closed:
                return
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                return


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.mode = "pass"
        self.latency_s = 0.0
        self.stats = ProxyStats()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def listen() -> None:
                self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]

            loop.run_until_complete(listen())
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fault-proxy-{self.upstream_port}")
        self._thread.daemon = True
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        self.set_mode("pass")
        return self

    @property
    def url_host_port(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        link = _Link(self, (reader, writer))
        self._links.add(link)
        try:
            await link.run()
        finally:
            self._links.discard(link)

    def set_mode(self, mode: str, latency_s: float = 0.0) -> None:
        """Switch the fault (thread-safe). ``reset`` also kills every current connection."""
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}")
        self.latency_s = latency_s
        self.mode = mode
        self.stats.modes.append((time.time(), mode))
        if mode == "reset" and self._loop is not None:
            self._loop.call_soon_threadsafe(self._reset_all)

    def _reset_all(self) -> None:
        for link in list(self._links):
            self.stats.reset += 1
            link.kill()

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for link in list(self._links):
                link.kill()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None
