"""The multiplexed connection under the auto-pipeline, against a real Redis."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
import redis.exceptions
import uvloop

from kai_inventory.engine.multiplex import MultiplexedConnection, for_client
from kai_inventory.engine.pipeline import AutoPipeline
from kai_inventory.resilience import CircuitBreaker, CircuitOpenError


@pytest.fixture
async def pipe(redis_url: str) -> AsyncIterator[AutoPipeline]:
    client = aioredis.from_url(redis_url, decode_responses=False)
    pipeline = AutoPipeline(client)
    assert pipeline.multiplexed
    yield pipeline
    pipeline.close()
    await client.aclose()


async def test_concurrent_commands_each_get_their_own_reply_in_one_write_per_batch(
    pipe: AutoPipeline, key_prefix: str
) -> None:
    keys = [f"{key_prefix}:mx:{i}" for i in range(200)]
    await asyncio.gather(*(pipe.execute("SET", k, str(i)) for i, k in enumerate(keys)))
    values = await asyncio.gather(*(pipe.execute("GET", k) for k in keys))
    assert values == [str(i).encode() for i in range(200)]
    assert pipe._mux is not None
    # batched, not one write per command (plus the HELLO handshake)
    assert pipe._mux.writes <= 2 * (200 // pipe.flush_at + 1) + 1


async def test_replies_are_shaped_exactly_as_redis_pys_own_commands_shape_them(
    pipe: AutoPipeline, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    key, zkey = f"{key_prefix}:mx:h", f"{key_prefix}:mx:z"
    assert await pipe.execute("HSET", key, "a", "1", "b", "2") == 2
    assert await pipe.execute("ZADD", zkey, "1.5", "m") == 1
    assert await pipe.execute("SET", f"{key_prefix}:mx:s", "x") is True
    reads: list[tuple[object, ...]] = [
        ("HGETALL", key),
        ("HMGET", key, "a", "zz"),
        ("EXISTS", key),
        ("ZRANGE", zkey, 0, 0, "WITHSCORES"),
        ("ZRANGEBYSCORE", zkey, "-inf", 5, "LIMIT", 0, 10),
        ("SMEMBERS", f"{key_prefix}:mx:none"),
        ("GET", f"{key_prefix}:mx:s"),
    ]
    for command in reads:
        assert await pipe.execute(*command) == await redis_client.execute_command(*command)
    sec, usec = await pipe.execute("TIME")
    assert isinstance(sec, int)
    assert isinstance(usec, int)


async def test_an_error_reply_fails_only_its_own_command_with_redis_pys_class(
    pipe: AutoPipeline, key_prefix: str
) -> None:
    key = f"{key_prefix}:mx:str"
    results = await asyncio.gather(
        pipe.execute("SET", key, "v"),
        pipe.execute("HGET", key, "f"),  # wrong type
        pipe.execute("FCALL", "no_such_function", 0),
        pipe.execute("GET", key),
        return_exceptions=True,
    )
    assert results[0] is True
    assert isinstance(results[1], redis.exceptions.ResponseError)
    assert "WRONGTYPE" in str(results[1])
    assert isinstance(results[2], redis.exceptions.ResponseError)
    assert results[3] == b"v"


async def test_an_argument_redis_cannot_take_fails_only_that_command(
    pipe: AutoPipeline, key_prefix: str
) -> None:
    key = f"{key_prefix}:mx:arg"
    results = await asyncio.gather(
        pipe.execute("SET", key, None), pipe.execute("SET", key, "ok"), return_exceptions=True
    )
    assert isinstance(results[0], redis.exceptions.DataError)
    assert results[1] is True
    assert await pipe.execute("GET", key) == b"ok"


async def test_a_client_without_a_plain_tcp_connection_keeps_redis_pys_pipeline(
    redis_url: str,
) -> None:
    decoded = aioredis.from_url(redis_url, decode_responses=True)
    unix = aioredis.Redis(unix_socket_path="/nonexistent/redis.sock")
    try:
        assert for_client(decoded) is None
        assert for_client(unix) is None
        assert not AutoPipeline(decoded).multiplexed
    finally:
        await decoded.aclose()
        await unix.aclose()


Guarded = Callable[[CircuitBreaker], MultiplexedConnection]


async def _send(mux: MultiplexedConnection, *command: object) -> object:
    """One command as its own batch, straight on the connection."""
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    mux.send([(command, future)])
    return await future


@pytest.fixture
async def guarded(redis_url: str) -> AsyncIterator[Guarded]:
    """A multiplexed connection to the test Redis behind the given breaker."""
    client = aioredis.from_url(redis_url, decode_responses=False)
    made: list[MultiplexedConnection] = []

    def make(breaker: CircuitBreaker) -> MultiplexedConnection:
        mux = for_client(client)
        assert mux is not None
        mux.breaker = breaker
        made.append(mux)
        return mux

    yield make
    for mux in made:
        mux.close()
    await client.aclose()


def _silent_listener() -> tuple[socket.socket, int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts (in the backlog), never answers
    return listener, listener.getsockname()[1]


async def test_a_redis_that_never_answers_times_out_every_waiting_command() -> None:
    listener, port = _silent_listener()
    mux = MultiplexedConnection("127.0.0.1", port, timeout_s=0.2)
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(3)]
    try:
        mux.send([(("GET", f"k{i}"), f) for i, f in enumerate(futures)])
        results = await asyncio.wait_for(
            asyncio.gather(*futures, return_exceptions=True), timeout=5
        )
        assert all(isinstance(r, redis.exceptions.TimeoutError) for r in results), results
        assert not mux.connected
    finally:
        mux.close()
        listener.close()


async def test_a_lost_connection_fails_the_waiting_commands_and_the_next_one_reconnects(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    client = aioredis.from_url(redis_url, decode_responses=False)
    pipeline = AutoPipeline(client)
    try:
        own_id = await pipeline.execute("CLIENT", "ID")
        blocked = asyncio.ensure_future(pipeline.execute("BLPOP", "kai-mx-never", "2"))
        await asyncio.sleep(0.1)
        await redis_client.execute_command("CLIENT", "KILL", "ID", own_id)
        with pytest.raises(redis.exceptions.ConnectionError):
            await blocked
        assert await pipeline.execute("PING") is True
        assert pipeline._mux is not None
        assert pipeline._mux.connects == 2
    finally:
        pipeline.close()
        await client.aclose()


async def test_the_circuit_breaker_opens_after_repeated_failures_and_then_fails_fast() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown_s=60)
    port = _free_closed_port()
    mux = MultiplexedConnection("127.0.0.1", port, timeout_s=0.2, breaker=breaker)
    try:
        for _ in range(2):
            with pytest.raises(redis.exceptions.ConnectionError):
                await _send(mux, "PING")
        assert breaker.state == "open"
        connects = mux.connects
        with pytest.raises(CircuitOpenError):
            await _send(mux, "PING")
        assert mux.connects == connects  # nothing touched the network
    finally:
        mux.close()


async def test_a_select_handshake_puts_commands_in_the_configured_database(
    redis_url: str, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    db3_url = redis_url.rsplit("/", 1)[0] + "/3"
    client = aioredis.from_url(db3_url, decode_responses=False)
    pipeline = AutoPipeline(client)
    key = f"{key_prefix}:mx:db"
    db3 = aioredis.from_url(db3_url, decode_responses=False)
    try:
        await pipeline.execute("SET", key, "three", "PX", 60_000)
        assert await db3.get(key) == b"three"
        assert await redis_client.get(key) is None
    finally:
        await db3.delete(key)
        await db3.aclose()
        pipeline.close()
        await client.aclose()


def _free_closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_pipeline_used_from_a_second_event_loop_gets_a_connection_of_its_own(
    redis_url: str,
) -> None:
    client = aioredis.from_url(redis_url, decode_responses=False)
    pipeline = AutoPipeline(client)

    async def ping() -> object:
        return await pipeline.execute("PING")

    try:
        assert asyncio.run(ping()) is True
        first = pipeline._mux
        assert asyncio.run(ping()) is True  # the first loop is closed by now
        assert pipeline._mux is not first
    finally:
        pipeline.close()
        asyncio.run(client.aclose())


async def test_a_failed_handshake_keeps_no_half_set_up_connection(redis_url: str) -> None:
    host, port = redis_url.split("//")[1].split("/")[0].split(":")
    mux = MultiplexedConnection(
        host, int(port), username="kai-no-such-user", password="x", timeout_s=1.0
    )
    try:
        for attempt in (1, 2):
            with pytest.raises(redis.exceptions.RedisError):
                await _send(mux, "PING")
            assert not mux.connected
            assert mux.connects == attempt  # each call tries the handshake again
    finally:
        mux.close()


async def test_a_probe_batch_that_never_reached_redis_lets_a_later_call_probe(
    guarded: Guarded,
) -> None:
    clock = [100.0]
    breaker = CircuitBreaker(threshold=1, cooldown_s=1.0, clock=lambda: clock[0])
    mux = guarded(breaker)
    breaker.failure()
    assert breaker.state == "open"
    clock[0] += 1.0
    with pytest.raises(redis.exceptions.DataError):
        await _send(mux, "SET", "k", None)  # the probe: nothing can be sent
    clock[0] += 1.0
    assert await _send(mux, "PING") is True  # the next probe goes through and closes it
    assert breaker.state == "closed"


async def test_one_lost_connection_counts_as_one_outage_however_many_batches_waited(
    guarded: Guarded, redis_client: aioredis.Redis
) -> None:
    breaker = CircuitBreaker(threshold=2, cooldown_s=60)
    mux = guarded(breaker)
    own_id = await _send(mux, "CLIENT", "ID")
    blocked = [  # three batches wait behind a blocking call
        asyncio.ensure_future(_send(mux, "BLPOP", f"kai-mx-never-{i}", "2")) for i in range(3)
    ]
    await asyncio.sleep(0.1)
    await redis_client.execute_command("CLIENT", "KILL", "ID", own_id)
    for future in blocked:
        with pytest.raises(redis.exceptions.ConnectionError):
            await future
    assert breaker.state == "closed"  # one failure of the two it takes
    assert await _send(mux, "PING") is True


async def _reset_before_taken(mux: MultiplexedConnection) -> None:
    """Leave ``mux`` as _open() finds a link reset before it took it: closed, its loss delivered
    while the link was not the connection's yet, so nothing noticed it."""
    link = mux._link
    assert link is not None
    assert link.transport is not None
    mux._link = None
    link.transport.abort()
    await asyncio.sleep(0.05)
    mux._link = link


@pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_a_batch_written_after_the_connection_closed_fails_as_a_lost_connection(
    redis_url: str, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    """A reset right after the connect (a proxy cutting the link) closes the transport before
    the connection takes it: the next write (the handshake, or a batch) must fail as a lost
    connection, a 503, not raise uvloop's RuntimeError (a 500) or wait for the timeout."""
    host, port = redis_url.split("//")[1].split("/")[0].split(":")

    async def scenario() -> None:
        mux = MultiplexedConnection(host, int(port), timeout_s=1.0)
        try:
            assert await _send(mux, "PING") == b"PONG"
            await _reset_before_taken(mux)
            future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            mux._write([(("PING",), future)], None)
            with pytest.raises(redis.exceptions.ConnectionError):
                await asyncio.wait_for(future, timeout=0.5)
            assert await _send(mux, "PING") == b"PONG"  # and the next call connects again
        finally:
            mux.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())


async def test_a_probe_written_on_a_closed_link_lets_a_later_call_probe(guarded: Guarded) -> None:
    clock = [100.0]
    breaker = CircuitBreaker(threshold=1, cooldown_s=1.0, clock=lambda: clock[0])
    mux = guarded(breaker)
    assert await _send(mux, "PING") is True
    await _reset_before_taken(mux)
    breaker.failure()
    clock[0] += 1.0
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    mux._write([(("PING",), future)], breaker.before())  # the probe, never sent
    with pytest.raises(redis.exceptions.ConnectionError):
        await future
    assert breaker.state == "open"
    clock[0] += 1.0
    assert await _send(mux, "PING") is True  # the next probe reconnects and closes it
    assert breaker.state == "closed"
