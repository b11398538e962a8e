"""The fault proxy: each mode does what it says, and modes switch while connections live."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.faults.proxy import FaultProxy


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


@pytest.fixture
def proxy(echo: int) -> Iterator[FaultProxy]:
    p = FaultProxy(echo).start()
    yield p
    p.stop()


async def _roundtrip(port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        got = b""
        while len(got) < len(payload):
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                break
            got += chunk
        return got
    finally:
        writer.close()


async def test_pass_forwards_both_ways(proxy: FaultProxy) -> None:
    assert await _roundtrip(proxy.port, b"hello" * 1000) == b"hello" * 1000


async def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    proxy.set_mode("latency", latency_s=0.2)
    started = time.monotonic()
    assert await _roundtrip(proxy.port, b"ping") == b"ping"
    assert time.monotonic() - started >= 0.4  # 0.2 s up + 0.2 s down


async def test_blackhole_accepts_and_never_answers_then_recovers(proxy: FaultProxy) -> None:
    proxy.set_mode("blackhole")
    with pytest.raises(TimeoutError):
        await _roundtrip(proxy.port, b"ping", timeout=0.5)
    proxy.set_mode("pass")
    assert await _roundtrip(proxy.port, b"pong") == b"pong"


async def test_reset_kills_live_connections_and_refuses_new_ones(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"a")
    assert await reader.read(1) == b"a"
    proxy.set_mode("reset")

    async def read_until_reset() -> None:
        for _ in range(50):  # the RST arrives: a read ends with a reset (or EOF)
            if not await asyncio.wait_for(reader.read(1), 2):
                raise ConnectionResetError("closed")
            await asyncio.sleep(0.02)

    with pytest.raises(ConnectionResetError):
        await read_until_reset()
    writer.close()

    async def new_connection() -> None:
        if not await _roundtrip(proxy.port, b"x", timeout=1.0):
            raise ConnectionResetError("closed")

    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError, TimeoutError)):
        await new_connection()
    assert proxy.stats.reset >= 2


async def test_cut_delivers_part_of_a_reply_then_resets(proxy: FaultProxy) -> None:
    proxy.set_mode("cut")
    payload = b"z" * 1000
    try:
        got = await _roundtrip(proxy.port, payload, timeout=1.0)
    except ConnectionResetError:
        got = b"?"
    assert len(got) < len(payload)
    assert proxy.stats.cut == 1
