"""Auto-pipelining: commands issued in the same event-loop tick share one Redis round trip.

``AutoPipeline.execute(*args)`` queues the command and returns its reply. The first command of
a tick schedules a flush with ``loop.call_soon``; every task that runs before that callback adds
to the same batch. The batch goes out as one non-transactional pipeline; each caller gets its
own reply, or its own exception (a script error only fails the command that raised it).

On a plain TCP Redis the batch is written by one :class:`~kai_inventory.engine.multiplex.
MultiplexedConnection` (one connection, hiredis packing and parsing, no pool), and a batch that
reaches ``flush_at`` commands is written at once, while the rest of the tick is still being
handled, so Redis starts on it instead of waiting for the whole tick. Cluster and other clients
go through redis-py's pipeline.

With ``retry_s`` (Redis Cluster), a command that meets a cluster in motion (failover: the
shard is down or not yet promoted; resharding: MOVED/ASK the client did not follow; a closed
connection) is sent again, with back-off, until ``retry_s`` has passed; only then does the
caller see the error. The cluster client follows MOVED/ASK and refreshes its slot map itself;
this covers what it gives up on. Every command the engine sends is safe to repeat: reads,
ZADD/SADD/SET/ZREM, and the scripts (a hold finds itself by its hold id on Cluster; the others
are idempotent, ``cancel`` answers NOT_SOLD the second time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kai_inventory.engine.multiplex import MultiplexedConnection
from kai_inventory.engine.multiplex import for_client as multiplex_for

log = logging.getLogger(__name__)

CLUSTER_TRANSIENT = (
    ClusterDownError,
    TryAgainError,
    MovedError,
    AskError,
    SlotNotCoveredError,
    RedisConnectionError,
    RedisTimeoutError,
)

_MAX_BATCH = 512
FLUSH_AT = 16


class AutoPipeline:
    def __init__(self, client: Any, retry_s: float = 0.0) -> None:
        self._client = client
        self.retry_s = retry_s
        self._mux = multiplex_for(client)
        self._mux_loop: asyncio.AbstractEventLoop | None = None
        self.flush_at = FLUSH_AT if self._mux is not None else _MAX_BATCH
        self.retries = 0  # commands sent again (Cluster)
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # round trips made (for tests and metrics)
        self.commands = 0

    async def execute(self, *args: Any) -> Any:
        if not self.retry_s:
            return await self._enqueue(args)
        deadline = time.monotonic() + self.retry_s
        delay = 0.05
        while True:
            try:
                return await self._enqueue(args)
            except CLUSTER_TRANSIENT as exc:
                if time.monotonic() + delay > deadline:
                    raise
                self.retries += 1
                log.info("%s: cluster busy (%s: %s); retrying", args[0], type(exc).__name__, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _enqueue(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue one command for this tick's batch; its reply comes in the returned future
        (awaited directly: no coroutine of its own per command)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        pending = self._pending
        pending.append((args, future))
        if len(pending) >= self.flush_at:
            self._flush(scheduled=False)
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    @property
    def multiplexed(self) -> bool:
        return self._mux is not None

    def _connection(self) -> MultiplexedConnection | None:
        """The multiplexed connection of the running loop (a client used from another loop,
        as in tests, gets a connection of its own there)."""
        mux = self._mux
        if mux is None:
            return None
        loop = asyncio.get_running_loop()
        if self._mux_loop is not loop:
            if self._mux_loop is not None:
                mux.close()
                mux = self._mux = multiplex_for(self._client)
            self._mux_loop = loop
        return mux

    def _flush(self, scheduled: bool = True) -> None:
        if scheduled:
            self._scheduled = False
        pending, self._pending = self._pending, []
        if not pending:
            return
        self.batches += 1
        self.commands += len(pending)
        mux = self._connection()
        if mux is not None:
            mux.send(pending)
            return
        for i in range(0, len(pending), _MAX_BATCH):
            task = asyncio.ensure_future(self._send(pending[i : i + _MAX_BATCH]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            if len(batch) == 1:
                args, future = batch[0]
                try:
                    reply = await self._client.execute_command(*args)
                except RedisError as exc:
                    if not future.done():
                        future.set_exception(exc)
                    return
                if not future.done():
                    future.set_result(reply)
                return
            pipe = self._client.pipeline(transaction=False)
            for args, _ in batch:
                pipe.execute_command(*args)
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # connection lost, cancelled: every caller learns of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RedisError(exc))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def close(self) -> None:
        """Close the multiplexed connection (redis-py's pool is the client's to close)."""
        if self._mux is not None:
            self._mux.close()
