"""Brokers carry a schedule's change events from Redis to this process.

The contract every broker keeps (the fan-out relies on nothing else):

- ``start(on_event, on_resubscribed)``: begin delivering. ``on_event(schedule_id, data)`` is
  called for each event, in channel order, from the broker's reader task.
- ``subscribe(schedule_id)``: returns once the subscription is active on the server, so that
  a snapshot read afterwards misses no event. Called once per schedule with local
  subscribers (the fan-out refcounts), never once per client.
- ``unsubscribe(schedule_id)``: stops delivery for that schedule.
- ``on_resubscribed(schedule_ids)`` is called after a lost connection was re-established and
  the listed schedules re-subscribed: events may have been lost in between, so the fan-out
  resyncs those schedules' subscribers.
- ``close()``: stops the reader and frees the connection.

:class:`RedisBroker` is the plain Redis implementation (SUBSCRIBE on the schedule's channel).
Redis Cluster's sharded pub/sub (SSUBSCRIBE on the same hash-tagged channel) is a second
implementation of this interface.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kai_inventory.engine.keys import Keys

log = logging.getLogger(__name__)

EventHandler = Callable[[str, bytes], None]
ResubscribedHandler = Callable[[list[str]], None]


class Broker(abc.ABC):
    @abc.abstractmethod
    async def start(self, on_event: EventHandler, on_resubscribed: ResubscribedHandler) -> None:
        """Begin delivering events to ``on_event``."""

    @abc.abstractmethod
    async def subscribe(self, schedule_id: str) -> None:
        """Subscribe to one schedule's events; returns once the server confirmed it."""

    @abc.abstractmethod
    async def unsubscribe(self, schedule_id: str) -> None:
        """Stop receiving one schedule's events."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the reader and release the connection."""

    # Shared by the implementations: the channel map, the subscriptions awaiting their
    # confirmation, the callbacks; and the routing of one pub/sub message.
    _channels: dict[str, str]  # channel -> schedule id
    _pending: dict[str, asyncio.Future[None]]
    _on_event: EventHandler | None
    _on_resubscribed: ResubscribedHandler | None

    @staticmethod
    async def _next_message(pubsub: aioredis.client.PubSub) -> dict[str, Any] | None:
        if not pubsub.subscribed:
            await asyncio.sleep(0.05)
            return None
        message: dict[str, Any] | None = await pubsub.get_message(
            ignore_subscribe_messages=False, timeout=1.0
        )
        return message

    def _route(self, message: dict[str, Any], data_kind: str, confirm_kind: str) -> tuple[str, str]:
        """Deliver an event, or settle a subscription's confirmation; returns (kind, channel).

        A confirmation nobody waits for means the client re-subscribed by itself after a lost
        connection (or a moved slot): events in between may be lost, so it is reported.
        """
        kind = message["type"]
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        if kind == data_kind:
            schedule_id = self._channels.get(channel)
            if schedule_id is not None and self._on_event is not None:
                self._on_event(schedule_id, message["data"])
        elif kind == confirm_kind:
            waiter = self._pending.pop(channel, None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(None)
            elif channel in self._channels and self._on_resubscribed is not None:
                self._on_resubscribed([self._channels[channel]])
        return kind, channel


class RedisBroker(Broker):
    """One Redis pub/sub connection per process, SUBSCRIBE per schedule with local subscribers.

    The connection is private to the broker and named ``client_name`` (``CLIENT LIST`` shows
    it; tests kill it by id to simulate a lost connection). When it drops, the reader
    reconnects with back-off, re-subscribes every channel and reports them through
    ``on_resubscribed``.
    """

    def __init__(self, redis_url: str, keys: Keys, client_name: str | None = None) -> None:
        self._url = redis_url
        self._keys = keys
        self.client_name = client_name or f"kai-ws-{secrets.token_hex(4)}"
        self._redis: aioredis.Redis | None = None
        self._pubsub: aioredis.client.PubSub | None = None
        self._channels: dict[str, str] = {}  # channel -> schedule id
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._on_event: EventHandler | None = None
        self._on_resubscribed: ResubscribedHandler | None = None
        self._lock = asyncio.Lock()
        self._connected = asyncio.Event()

    async def start(self, on_event: EventHandler, on_resubscribed: ResubscribedHandler) -> None:
        self._on_event = on_event
        self._on_resubscribed = on_resubscribed
        self._redis = aioredis.from_url(
            self._url, client_name=self.client_name, health_check_interval=10
        )
        self._pubsub = self._redis.pubsub()
        self._connected.set()
        self._reader = asyncio.create_task(self._read_loop(), name="ws-broker-reader")

    async def subscribe(self, schedule_id: str) -> None:
        channel = self._keys.schedule(schedule_id).channel
        async with self._lock:
            await self._connected.wait()
            self._channels[channel] = schedule_id
            loop = asyncio.get_running_loop()
            waiter = self._pending.get(channel)
            if waiter is None or waiter.done():
                waiter = self._pending[channel] = loop.create_future()
            await self._started_pubsub().subscribe(channel)
        await asyncio.wait_for(asyncio.shield(waiter), timeout=10)

    async def unsubscribe(self, schedule_id: str) -> None:
        channel = self._keys.schedule(schedule_id).channel
        async with self._lock:
            self._channels.pop(channel, None)
            pending = self._pending.pop(channel, None)
            if pending is not None and not pending.done():
                pending.cancel()
            if self._pubsub is not None and self._connected.is_set():
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.unsubscribe(channel)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()

    async def _read_loop(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self._read_until_error()
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("ws broker: pub/sub connection lost (%s); reconnecting", exc)
            except Exception:  # a bug must not stop delivery for the whole process
                log.exception("ws broker: reader failed; restarting it")
            self._connected.clear()
            # Retry until re-subscribed: a failed attempt leaves a pub/sub that is subscribed
            # to nothing, which the reader would wait on forever (Redis down > one back-off).
            while True:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                if await self._reconnect():
                    backoff = 0.05
                    break

    def _started_pubsub(self) -> aioredis.client.PubSub:
        if self._pubsub is None:
            raise RuntimeError("the broker is not started")
        return self._pubsub

    async def _read_until_error(self) -> None:
        pubsub = self._started_pubsub()
        while True:
            message = await self._next_message(pubsub)
            if message is not None:
                self._route(message, "message", "subscribe")

    async def _reconnect(self) -> bool:
        async with self._lock:
            if self._pubsub is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            if self._redis is None:
                raise RuntimeError("the broker is not started")
            self._pubsub = self._redis.pubsub()
            channels = list(self._channels)
            try:
                if channels:
                    # confirmations come back through the reader as unsolicited
                    # "subscribe" messages, which report the channel for a resync
                    await self._pubsub.subscribe(*channels)
            except (RedisError, OSError) as exc:
                log.warning("ws broker: reconnect failed (%s)", exc)
                return False
            self._connected.set()
        log.info("ws broker: reconnected, %d channels re-subscribed", len(channels))
        return True
