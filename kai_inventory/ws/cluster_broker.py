"""The Redis Cluster broker: sharded pub/sub (SSUBSCRIBE) on the master of each schedule's slot.

On Cluster the engine's scripts publish with ``SPUBLISH`` on the schedule's channel
``P:{s:ID}:events``, which stays on the shard that owns the schedule's slot. This broker keeps
one pub/sub connection per master that serves a subscribed channel, and SSUBSCRIBEs each
channel on its slot's master (from the cluster client's slot map). It keeps the
:class:`~kai_inventory.ws.broker.Broker` contract:

- ``subscribe`` returns once the master confirmed the SSUBSCRIBE;
- a lost connection (failover, restart) is re-established with back-off: the slot map is
  refreshed, every channel of that connection is SSUBSCRIBEd again on its (maybe new) master,
  and ``on_resubscribed`` reports them for a resync;
- a slot moved away (resharding) makes the old master end the subscription with an
  unsolicited ``sunsubscribe``: the channel is subscribed on its new master and reported too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kai_inventory.engine.connection import CLUSTER_SCHEME, client_for_url
from kai_inventory.engine.keys import Keys
from kai_inventory.ws.broker import Broker, EventHandler, ResubscribedHandler

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _NodeSub:
    """One master's pub/sub connection and the channels subscribed on it."""

    name: str
    host: str
    port: int
    client: aioredis.Redis
    pubsub: Any
    channels: set[str] = field(default_factory=set)
    reader: asyncio.Task[None] | None = None


class ClusterBroker(Broker):
    def __init__(self, redis_url: str, keys: Keys, client_name: str | None = None) -> None:
        self._url = redis_url
        self._keys = keys
        self.client_name = client_name or f"kai-ws-{secrets.token_hex(4)}"
        self._cluster: Any = None
        self._subs: dict[str, _NodeSub] = {}  # node name -> its pub/sub
        self._channels: dict[str, str] = {}  # channel -> schedule id
        self._where: dict[str, str] = {}  # channel -> node name it is subscribed on
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._on_event: EventHandler | None = None
        self._on_resubscribed: ResubscribedHandler | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def start(self, on_event: EventHandler, on_resubscribed: ResubscribedHandler) -> None:
        self._on_event = on_event
        self._on_resubscribed = on_resubscribed
        url = self._url  # REDIS_URL may be redis:// with KAI_REDIS_CLUSTER=1
        if not url.startswith(CLUSTER_SCHEME):
            url = CLUSTER_SCHEME + url.split("://", 1)[-1]
        self._cluster = client_for_url(url)
        await self._cluster.initialize()

    # ---- subscriptions ----------------------------------------------------------------------

    def _node_sub(self, node: Any) -> _NodeSub:
        sub = self._subs.get(node.name)
        if sub is None:
            client = aioredis.Redis(
                host=node.host,
                port=node.port,
                client_name=self.client_name,
                health_check_interval=10,
            )
            sub = _NodeSub(node.name, node.host, node.port, client, client.pubsub())
            self._subs[node.name] = sub
            sub.reader = asyncio.create_task(self._read_loop(sub), name=f"ws-sbroker-{node.name}")
        return sub

    async def subscribe(self, schedule_id: str) -> None:
        channel = self._keys.schedule(schedule_id).channel
        async with self._lock:
            self._channels[channel] = schedule_id
            loop = asyncio.get_running_loop()
            waiter = self._pending.get(channel)
            if waiter is None or waiter.done():
                waiter = self._pending[channel] = loop.create_future()
            await self._ssubscribe(channel)
        await asyncio.wait_for(asyncio.shield(waiter), timeout=10)

    async def _ssubscribe(self, channel: str) -> None:
        """SSUBSCRIBE ``channel`` on the master of its slot (caller holds the lock)."""
        node = self._cluster.get_node_from_key(channel)
        sub = self._node_sub(node)
        old = self._where.get(channel)
        if old is not None and old != sub.name and old in self._subs:
            self._subs[old].channels.discard(channel)
        sub.channels.add(channel)
        self._where[channel] = sub.name
        await sub.pubsub.ssubscribe(channel)

    async def unsubscribe(self, schedule_id: str) -> None:
        channel = self._keys.schedule(schedule_id).channel
        async with self._lock:
            self._channels.pop(channel, None)
            pending = self._pending.pop(channel, None)
            if pending is not None and not pending.done():
                pending.cancel()
            name = self._where.pop(channel, None)
            sub = self._subs.get(name) if name else None
            if sub is not None:
                sub.channels.discard(channel)
                with contextlib.suppress(RedisError, OSError):
                    await sub.pubsub.sunsubscribe(channel)

    async def close(self) -> None:
        self._closed = True
        for sub in list(self._subs.values()):
            await self._close_sub(sub, cancel_reader=True)
        self._subs.clear()
        if self._cluster is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._cluster.aclose()

    async def _close_sub(self, sub: _NodeSub, cancel_reader: bool) -> None:
        if cancel_reader and sub.reader is not None:
            sub.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sub.reader
        with contextlib.suppress(RedisError, OSError):
            await sub.pubsub.aclose()
        with contextlib.suppress(RedisError, OSError):
            await sub.client.aclose()

    # ---- reading ----------------------------------------------------------------------------

    async def _read_loop(self, sub: _NodeSub) -> None:
        backoff = 0.05
        while not self._closed:
            try:
                await self._read_until_error(sub)
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("ws sbroker %s: connection lost (%s); moving on", sub.name, exc)
            except Exception:  # a bug must not stop delivery for the whole process
                log.exception("ws sbroker %s: reader failed; restarting it", sub.name)
            while not self._closed:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                if await self._recover(sub):
                    return  # the channels live on fresh connections (new readers)

    async def _read_until_error(self, sub: _NodeSub) -> None:
        while True:
            message = await self._next_message(sub.pubsub)
            if message is None:
                continue
            kind, channel = self._route(message, "smessage", "ssubscribe")
            if (
                kind == "sunsubscribe"
                and channel in self._channels
                and self._where.get(channel) == sub.name
            ):
                # the master let the channel go (its slot moved): follow it
                asyncio.create_task(self._move(channel))  # noqa: RUF006

    async def _move(self, channel: str) -> None:
        async with self._lock:
            if channel not in self._channels:
                return
            with contextlib.suppress(RedisError, OSError):
                await self._cluster.nodes_manager.initialize()
            try:
                await self._ssubscribe(channel)
            except (RedisError, OSError) as exc:
                log.warning("ws sbroker: cannot follow %s (%s)", channel, exc)

    async def _recover(self, sub: _NodeSub) -> bool:
        """Drop a broken connection and subscribe its channels again on their masters (fresh
        slot map). True once done; the confirmations come back as unsolicited ``ssubscribe``
        messages, which report the schedules for a resync."""
        async with self._lock:
            try:
                await self._cluster.nodes_manager.initialize()
            except (RedisError, OSError) as exc:
                log.warning("ws sbroker: slot map refresh failed (%s)", exc)
                return False
            if self._subs.get(sub.name) is sub:
                del self._subs[sub.name]
            await self._close_sub(sub, cancel_reader=False)
            channels = [c for c in sub.channels if c in self._channels]
            try:
                for channel in channels:
                    self._where.pop(channel, None)
                    await self._ssubscribe(channel)
            except (RedisError, OSError) as exc:
                log.warning("ws sbroker: re-subscribe failed (%s)", exc)
                sub.channels = set(channels)  # tried again on the next attempt
                return False
        log.info("ws sbroker: %d channels of %s re-subscribed", len(channels), sub.name)
        return True
