"""Degrade, never hang: Redis client timeouts, a circuit breaker, and the start-up checks.

- ``create_redis_client(settings)``: the service's Redis client. Every socket operation has
  a deadline (``KAI_REDIS_TIMEOUT_MS``, default 300 ms, for connect and for each reply), a
  lost connection is retried once at once (a pooled connection that died with a restarted
  Redis), and every call goes through a :class:`CircuitBreaker`.
- :class:`CircuitBreaker`: after ``threshold`` consecutive connection failures or timeouts
  the circuit opens and calls fail at once with :class:`CircuitOpenError` (a
  ``redis.exceptions.ConnectionError``, so every layer already maps it to 503 with
  ``Retry-After``) instead of each request waiting out its own timeout on a dead Redis.
  After ``cooldown_s`` one probe call is let through (half-open): success closes the
  circuit, failure opens it again. One breaker per process.
- ``check_redis_config(client)``: refuses a Redis whose ``maxmemory-policy`` evicts keys
  (holds would vanish silently) and warns when AOF is off; a managed Redis that refuses
  ``CONFIG GET`` gets a warning and start-up goes on.

See docs/RELIABILITY.md for the faults these were tested against.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from kai_inventory.engine.connection import create_redis
from kai_inventory.settings import Settings

log = logging.getLogger("kai_inventory.resilience")

DEFAULT_REDIS_TIMEOUT_S = 0.3
BREAKER_THRESHOLD = 3
BREAKER_COOLDOWN_S = 1.0

# Failures that say "Redis is not answering" (a script error or a refusal is an answer).
REDIS_OUTAGES: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)


class CircuitOpenError(redis.exceptions.ConnectionError):
    """Raised without touching the network while the circuit is open."""


# what an unreachable Redis raises: refused or reset connections, timeouts, an open circuit
REDIS_UNREACHABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)


class StartupCheckError(RuntimeError):
    """The Redis configuration would lose holds silently; start-up stops."""


class CircuitBreaker:
    """Closed -> (``threshold`` consecutive outages) -> open -> (``cooldown_s``) -> half-open:
    one probe; its success closes the circuit, its failure opens it for another cooldown."""

    def __init__(
        self,
        name: str = "redis",
        threshold: int = BREAKER_THRESHOLD,
        cooldown_s: float = BREAKER_COOLDOWN_S,
        clock: Any = time.monotonic,
    ) -> None:
        self.name = name
        self.threshold = max(1, threshold)
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self.opened_total = 0

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown_s and not self._probing:
            return "half_open"
        return "open"

    def before(self) -> bool:
        """Call before a request; raises when open. Returns True when this call is the probe."""
        if self._opened_at is None:
            return False
        if not self._probing and self._clock() - self._opened_at >= self.cooldown_s:
            self._probing = True
            return True
        retry_in = max(0.0, self.cooldown_s - (self._clock() - self._opened_at))
        raise CircuitOpenError(f"{self.name} circuit open (retry in {retry_in:.1f}s)")

    def success(self, probe: bool = False) -> None:
        if probe or self._opened_at is not None:
            if self._opened_at is not None:
                log.info("%s circuit closed", self.name)
            self._opened_at = None
            self._probing = False
        self._failures = 0

    def failure(self, probe: bool = False) -> None:
        self._failures += 1
        if probe or (self._opened_at is None and self._failures >= self.threshold):
            if self._opened_at is None:
                self.opened_total += 1
                log.warning("%s circuit open after %d failures", self.name, self._failures)
            self._opened_at = self._clock()
            self._probing = False

    async def call(
        self, work: Any, outages: tuple[type[BaseException], ...] = REDIS_OUTAGES
    ) -> Any:
        """Run ``await work()`` under the breaker. ``outages`` count towards opening it; any
        other error is an answer (the dependency is alive); a cancelled call says nothing."""
        probe = self.before()
        try:
            result = await work()
        except outages:
            self.failure(probe)
            raise
        except RuntimeError as exc:
            if not _closed_transport(exc):
                if probe:  # not an outage: let the next call probe again
                    self._probing = False
                raise
            # uvloop: a connection that died while being set up ("unable to perform
            # operation on <TCPTransport closed=True>"): a lost connection, not a bug
            self.failure(probe)
            raise redis.exceptions.ConnectionError(f"{self.name}: {exc}") from exc
        except Exception:
            self.success(probe)  # an error the dependency answered with
            raise
        except BaseException:
            if probe:  # cancelled: let the next call probe again
                self._probing = False
            raise
        self.success(probe)
        return result


def _closed_transport(exc: RuntimeError) -> bool:
    text = str(exc)
    return "closed=True" in text or "handler is closed" in text


class GuardedPipeline(Pipeline):
    breaker: CircuitBreaker

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        return await self.breaker.call(lambda: super(GuardedPipeline, self).execute(raise_on_error))  # type: ignore[no-any-return]


class GuardedRedis(aioredis.Redis):
    """``redis.asyncio.Redis`` whose commands and pipelines pass through one breaker."""

    breaker: CircuitBreaker

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await self.breaker.call(
            lambda: super(GuardedRedis, self).execute_command(*args, **options)  # type: ignore[no-untyped-call]
        )

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = GuardedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.breaker = self.breaker
        return pipe


def redis_timeout_s(settings: Settings) -> float:
    ms = getattr(settings, "redis_timeout_ms", 0)
    return ms / 1000 if ms else DEFAULT_REDIS_TIMEOUT_S


def create_redis_client(settings: Settings, breaker: CircuitBreaker | None = None) -> GuardedRedis:
    """The service's (non-cluster) Redis client: deadlines, one retry, a circuit breaker."""
    timeout = redis_timeout_s(settings)
    client = cast(
        GuardedRedis,
        GuardedRedis.from_url(
            settings.redis_url,
            decode_responses=False,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
            health_check_interval=0,
        ),
    )
    client.breaker = breaker or CircuitBreaker()
    return client


def create_service_redis(settings: Settings) -> aioredis.Redis:
    """The one Redis client factory of the service: on Cluster, redis-py's cluster client
    (it follows MOVED/ASK and retries a failover, see engine/connection.py); otherwise the
    guarded client above."""
    if settings.is_cluster:
        return create_redis(settings)  # type: ignore[return-value]
    return create_redis_client(settings)


async def check_redis_config(client: aioredis.Redis) -> list[str]:
    """Start-up check. Raises StartupCheckError for an evicting ``maxmemory-policy``; returns
    (and logs) warnings: AOF off, or CONFIG GET refused (managed Redis)."""
    warnings: list[str] = []
    try:
        policy_reply = await client.config_get("maxmemory-policy")
        aof_reply = await client.config_get("appendonly")
    except redis.exceptions.ResponseError as exc:
        message = (
            f"cannot read the Redis configuration ({exc}); "
            "make sure maxmemory-policy is noeviction and AOF is on"
        )
        log.warning(message)
        return [message]
    policy = _config_value(policy_reply, "maxmemory-policy")
    if policy and policy != "noeviction":
        raise StartupCheckError(
            f"Redis maxmemory-policy is {policy!r}: it evicts keys, so live holds would vanish "
            "silently; set maxmemory-policy noeviction"
        )
    if _config_value(aof_reply, "appendonly") != "yes":
        message = (
            "Redis AOF is off (appendonly no): a Redis restart loses every live hold "
            "(sales are rebuilt from Postgres); set appendonly yes"
        )
        log.warning(message)
        warnings.append(message)
    return warnings


def _config_value(reply: Any, name: str) -> str:
    if not isinstance(reply, dict):
        return ""
    for key, value in reply.items():
        k = key.decode() if isinstance(key, bytes) else str(key)
        if k == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""
