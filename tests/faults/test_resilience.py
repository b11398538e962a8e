"""kai_inventory/resilience.py: the circuit breaker and the Redis start-up checks."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from aiohttp.test_utils import TestServer

from kai_inventory.app import create_app
from kai_inventory.localstack import RedisServer, free_port
from kai_inventory.resilience import (
    CircuitBreaker,
    CircuitOpenError,
    StartupCheckError,
    check_redis_config,
    create_redis_client,
)
from kai_inventory.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _fail() -> None:
    raise redis.exceptions.TimeoutError("no answer")


async def _ok() -> str:
    return "ok"


async def test_breaker_opens_after_consecutive_outages_and_fails_fast() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown_s=1.0, clock=clock)
    for _ in range(3):
        with pytest.raises(redis.exceptions.TimeoutError):
            await breaker.call(_fail)
    assert breaker.state == "open"
    calls = 0

    async def counted() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    with pytest.raises(CircuitOpenError):  # a ConnectionError: every layer maps it to 503
        await breaker.call(counted)
    assert calls == 0  # the dead Redis was not waited on


async def _half_open(clock: Clock) -> CircuitBreaker:
    """A breaker that one outage opened and whose cooldown has just passed."""
    breaker = CircuitBreaker(threshold=1, cooldown_s=1.0, clock=clock)
    with pytest.raises(redis.exceptions.TimeoutError):
        await breaker.call(_fail)
    clock.now += 1.0
    return breaker


async def test_breaker_probes_once_after_the_cooldown_and_closes_on_success() -> None:
    clock = Clock()
    breaker = await _half_open(clock)
    assert breaker.state == "half_open"
    assert breaker.before() is True  # this caller is the probe ...
    with pytest.raises(CircuitOpenError):
        breaker.before()  # ... and nobody else gets through meanwhile
    breaker.success(probe=True)
    assert breaker.state == "closed"
    assert await breaker.call(_ok) == "ok"


async def test_a_probe_that_raises_an_unrelated_error_lets_the_next_call_probe() -> None:
    breaker = await _half_open(Clock())

    async def bug() -> None:
        raise RuntimeError("a bug, not an outage")

    with pytest.raises(RuntimeError):
        await breaker.call(bug)  # the probe
    assert breaker.state == "half_open"  # not stuck open with a probe that never returns
    assert await breaker.call(_ok) == "ok"
    assert breaker.state == "closed"


async def test_a_probe_answered_with_an_error_closes_the_circuit() -> None:
    breaker = await _half_open(Clock())

    async def refused() -> None:
        raise redis.exceptions.ResponseError("ERR an answer, so the dependency is alive")

    with pytest.raises(redis.exceptions.ResponseError):
        await breaker.call(refused)  # the probe
    assert breaker.state == "closed"


async def test_breaker_reopens_when_the_probe_fails_and_ignores_answers_that_are_errors() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=2, cooldown_s=1.0, clock=clock)

    async def script_error() -> None:
        raise redis.exceptions.ResponseError("ERR a script error is an answer")

    for _ in range(5):
        with pytest.raises(redis.exceptions.ResponseError):
            await breaker.call(script_error)
    assert breaker.state == "closed"
    for _ in range(2):
        with pytest.raises(redis.exceptions.TimeoutError):
            await breaker.call(_fail)
    clock.now += 1.5
    with pytest.raises(redis.exceptions.TimeoutError):
        await breaker.call(_fail)  # the probe
    assert breaker.state == "open"  # for a fresh cooldown
    with pytest.raises(CircuitOpenError):
        await breaker.call(_ok)
    clock.now += 1.0
    assert await breaker.call(_ok) == "ok"  # the next probe succeeds: closed
    assert breaker.state == "closed"
    assert breaker.opened_total == 1


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path / "redis", appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture
async def private_client(private_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(private_redis.url)
    yield client
    await client.aclose()


async def test_startup_refuses_a_redis_that_evicts_keys(
    private_redis: RedisServer, private_client: aioredis.Redis, settings: Settings
) -> None:
    await private_client.config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(StartupCheckError, match="allkeys-lru"):
        await check_redis_config(private_client)
    # the service itself does not start on it
    server = TestServer(create_app(settings.replace(redis_url=private_redis.url)))
    with pytest.raises(StartupCheckError):
        await server.start_server()
    await server.close()


async def test_startup_warns_when_aof_is_off_and_passes_when_on(
    private_client: aioredis.Redis,
) -> None:
    warnings = await check_redis_config(private_client)
    assert any("AOF is off" in w for w in warnings), warnings
    await private_client.config_set("appendonly", "yes")
    assert await check_redis_config(private_client) == []
    await private_client.config_set("appendonly", "no")  # a quick shutdown


async def test_startup_warns_and_goes_on_when_config_get_is_refused(tmp_path: Path) -> None:
    binary = shutil.which("redis-server")
    assert binary is not None
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path),
         "--rename-command", "CONFIG", ""],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0")
        client = create_redis_client(settings)
        for _ in range(100):
            try:
                await client.ping()
                break
            except redis.exceptions.ConnectionError:
                import asyncio

                await asyncio.sleep(0.05)
        warnings = await check_redis_config(client)
        assert len(warnings) == 1
        assert "cannot read the Redis configuration" in warnings[0]
        await client.aclose()
    finally:
        proc.terminate()
        proc.wait(5)


async def test_service_client_gives_up_on_a_silent_redis_within_its_timeout() -> None:
    import asyncio
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts (in the backlog), never answers
    port = listener.getsockname()[1]
    client = create_redis_client(
        Settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_ms=300)
    )
    try:
        started = time.monotonic()
        with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            await asyncio.wait_for(client.ping(), timeout=5)
        assert time.monotonic() - started < 3.0  # the 300 ms timeout, not the 5 s wait_for
    finally:
        await client.aclose()
        listener.close()


async def test_a_worker_started_while_redis_is_down_serves_and_holds_once_it_is_back(
    tmp_path: Path, settings: Settings
) -> None:
    """Before, the start-up check raised and the worker exited, and `serve` stopped its siblings
    with it: a Redis that was down while one worker (re)started took the whole service down."""
    import asyncio
    import time

    import aiohttp

    from kai_inventory.context import CTX
    from kai_inventory.engine.codes import Code
    from kai_inventory.engine.inventory import HoldRequest
    from tests.engine.model import small_layout

    port = free_port()  # nothing listens there yet
    app = create_app(settings.replace(redis_url=f"redis://127.0.0.1:{port}/0"))
    server = TestServer(app)
    await server.start_server()  # serves without Redis rather than raising
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(server.make_url("/readyz")) as response,
        ):
            assert response.status == 503
            assert (await response.json())["checks"]["redis"] != "ok"
        back = RedisServer(port, tmp_path / "redis").start()
        try:
            inventory = app[CTX].inventory
            deadline = time.monotonic() + 15  # the circuit breaker's probe lets calls through
            while True:
                try:
                    await inventory.open(small_layout("BACK"))  # the library loads on first use
                    break
                except redis.exceptions.ConnectionError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
            held = await inventory.hold(HoldRequest("BACK", "u", 0, 2, 60_000, seats=[1]))
            assert held.code == Code.OK
        finally:
            back.stop()
    finally:
        await server.close()


async def test_start_up_still_stops_on_wrong_redis_credentials(
    tmp_path: Path, settings: Settings
) -> None:
    guarded = RedisServer(
        free_port(), tmp_path / "redis", extra_args=("--requirepass", "right")
    ).start()
    try:
        url = f"redis://:wrong@127.0.0.1:{guarded.port}/0"
        server = TestServer(create_app(settings.replace(redis_url=url)))
        with pytest.raises(redis.exceptions.AuthenticationError):
            await server.start_server()
        await server.close()
    finally:
        guarded.stop()
