"""One pipelined Redis connection for the auto-pipeline: commands written as they come,
replies matched in order.

redis-py's asyncio pipeline costs tens of microseconds of Python per command (a pipeline
object, a pool checkout under a lock, one coroutine per reply read) and writes only when the
event loop comes back to the flushing task. Under a rush of holds that made the worker and
Redis take turns: the worker read 64 requests, then waited idle while Redis ran the 64
scripts, then Redis waited while the worker answered (docs/PERFORMANCE.md, "Multiplexed
connection"). Here a batch is packed by hiredis and written with one synchronous
``transport.write``; replies are parsed by a ``hiredis.Reader`` in ``data_received`` and
resolve the waiting futures first in, first out. Redis runs one connection's commands in the
order they arrive, so one connection per process loses nothing against a pool.

Same answers as redis-py: the same wire protocol (``HELLO 3`` when the client speaks RESP3,
redis-py's default), the same hiredis parser, the client's response callbacks applied by
command name; error replies become redis-py's exception classes (its own parser's mapping);
a reply that does not come within ``timeout_s`` of the previous one (or of the request, when
nothing was pending) closes the connection and fails every waiting command with
``TimeoutError``; a lost connection fails them with ``ConnectionError``. The next command
connects again. An optional circuit breaker (``before``/``success``/``failure``, as
``kai_inventory.resilience.CircuitBreaker``) sees every batch.

Never send a blocking command (``BLPOP``, ``SUBSCRIBE``...) through it: everything behind it
would wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import hiredis
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import DEFAULT_RESP_VERSION

from kai_inventory.engine.connection import pack_command, plain_tcp_options

Command = tuple[Any, ...]
Pending = tuple[Command, "asyncio.Future[Any]"]

_NOT_ENOUGH = object()


class Breaker(Protocol):
    def before(self) -> bool: ...

    def success(self, probe: bool = False) -> None: ...

    def failure(self, probe: bool = False) -> None: ...


class _Link(asyncio.Protocol):
    """The connection's protocol: feeds replies to its owner."""

    def __init__(self, owner: MultiplexedConnection) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.owner._received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(self, exc)


class MultiplexedConnection:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        protocol: int = 2,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float | None = None,
        connect_timeout_s: float | None = None,
        callbacks: Mapping[str, Callable[..., Any]] | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        self.protocol = protocol
        self.username = username
        self.password = password
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s or timeout_s
        self.callbacks = dict(callbacks or {})
        self.breaker = breaker
        self._link: _Link | None = None
        self._reader: Any = None
        self._connecting: asyncio.Task[None] | None = None
        # (future, command name, breaker probe flag or None when the batch's last reply is not it)
        self._waiting: collections.deque[tuple[asyncio.Future[Any], str, bool | None]] = (
            collections.deque()
        )
        self._progress = 0.0  # monotonic time of the last reply (or of the first wait)
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False
        self.connects = 0
        self.writes = 0

    @property
    def connected(self) -> bool:
        link = self._link
        return link is not None and link.transport is not None and not link.transport.is_closing()

    # ---- sending ------------------------------------------------------------------------------

    def send(self, batch: Sequence[Pending]) -> None:
        """Write ``batch`` now if connected (else connect first, in a task); every future gets
        its reply or its exception."""
        if not batch:
            return
        if self._closed:
            _fail(batch, RedisConnectionError("connection closed"))
            return
        probe: bool | None = None
        if self.breaker is not None:
            try:
                probe = self.breaker.before()
            except Exception as exc:  # the circuit is open: nothing leaves
                _fail(batch, exc)
                return
        if self.connected:
            self._write(batch, probe)
            return
        task = asyncio.ensure_future(self._send_after_connect(batch, probe))
        task.add_done_callback(_consume)

    async def _send_after_connect(self, batch: Sequence[Pending], probe: bool | None) -> None:
        try:
            await self._connect()
        except BaseException as exc:
            if self.breaker is not None:
                self.breaker.failure(bool(probe))
            _fail(batch, exc if isinstance(exc, Exception) else RedisConnectionError(str(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        self._write(batch, probe)  # fails the batch if the link was lost while connecting

    def _unsent(self, probe: bool | None) -> None:
        """Nothing of a batch reached Redis: a probe's counts as failed (else the breaker
        would wait for the verdict of a probe that was never sent)."""
        if probe and self.breaker is not None:
            self.breaker.failure(probe)

    def _write(self, batch: Sequence[Pending], probe: bool | None) -> None:
        link = self._link
        transport = link.transport if link is not None else None
        if transport is None or transport.is_closing():
            # lost, or closed before the loss was delivered (a reset right after the connect:
            # uvloop's write would raise RuntimeError, asyncio's would drop the bytes)
            _fail(batch, RedisConnectionError("connection to Redis lost"))
            self._unsent(probe)
            return
        chunks: list[bytes] = []
        waiting = self._waiting
        if not waiting:
            self._progress = time.monotonic()
        for args, future in batch:
            try:
                chunks.append(pack_command(args))
            except DataError as exc:
                if not future.done():
                    future.set_exception(exc)
                continue
            name = args[0] if isinstance(args[0], str) else args[0].decode()
            waiting.append((future, name.upper(), None))
        if not chunks:
            self._unsent(probe)
            return
        if probe is not None:  # the batch's verdict comes with its last reply
            future, name, _ = waiting[-1]
            waiting[-1] = (future, name, probe)
        transport.write(b"".join(chunks))
        self.writes += 1
        self._arm()

    # ---- connecting ---------------------------------------------------------------------------

    async def _connect(self) -> None:
        if self.connected:
            return
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open())
        await asyncio.shield(self._connecting)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        link = _Link(self)
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: link, self.host, self.port),
                self.connect_timeout_s,
            )
        except TimeoutError as exc:
            raise RedisTimeoutError(f"connecting to {self.host}:{self.port}: timed out") from exc
        except OSError as exc:
            raise RedisConnectionError(f"connecting to {self.host}:{self.port}: {exc}") from exc
        self._reader = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=BaseParser.parse_error,
            notEnoughData=_NOT_ENOUGH,
        )
        self._link = link
        self.connects += 1
        handshake: list[Command] = []
        auth: Command = ()
        if self.password is not None:
            auth = (self.username or "default", self.password)
        if self.protocol == 3:
            handshake.append(("HELLO", 3, "AUTH", *auth) if auth else ("HELLO", 3))
        elif auth:
            handshake.append(("AUTH", *auth))
        if self.db:
            handshake.append(("SELECT", self.db))
        if handshake:
            futures = [loop.create_future() for _ in handshake]
            self._write(list(zip(handshake, futures, strict=True)), None)
            try:
                for future in futures:
                    await future  # an AUTH error is raised to the first caller
            except BaseException as exc:
                if self._link is link:  # no half-set-up connection is kept
                    self._abort(RedisConnectionError(f"Redis handshake failed: {exc}"))
                raise

    # ---- receiving ----------------------------------------------------------------------------

    def _received(self, link: _Link, data: bytes) -> None:
        if link is not self._link:
            return
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        callbacks = self.callbacks
        breaker = self.breaker
        while True:
            try:
                reply = reader.gets()
            except Exception as exc:  # a protocol error: nothing after it can be trusted
                self._abort(RedisConnectionError(f"bad reply from Redis: {exc}"))
                return
            if reply is _NOT_ENOUGH:
                break
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self._abort(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            future, name, probe = waiting.popleft()
            if probe is not None and breaker is not None:
                breaker.success(probe)
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
                continue
            callback = callbacks.get(name)
            if callback is not None:
                try:
                    reply = callback(reply)
                except Exception as exc:
                    future.set_exception(exc)
                    continue
            future.set_result(reply)
        self._progress = time.monotonic()

    def _lost(self, link: _Link, exc: Exception | None) -> None:
        if link is not self._link:
            return
        self._link = None
        self._fail_waiting(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def _fail_waiting(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, collections.deque()
        breaker = self.breaker
        if breaker is not None and waiting:
            # one lost connection is one outage, however many batches were on it: a Redis
            # restart must not open the circuit by itself when the reconnect works
            breaker.failure(any(p for _, _, p in waiting))
        for future, _, _ in waiting:
            if not future.done():
                future.set_exception(error)

    # ---- deadlines ----------------------------------------------------------------------------

    def _arm(self) -> None:
        if self.timeout_s is None or self._watchdog is not None:
            return
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self.timeout_s, self._check)

    def _check(self) -> None:
        self._watchdog = None
        if not self._waiting or self.timeout_s is None:
            return
        idle = time.monotonic() - self._progress
        if idle < self.timeout_s:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(self.timeout_s - idle, self._check)
            return
        self._abort(RedisTimeoutError(f"no reply from Redis within {self.timeout_s}s"))

    def _abort(self, error: Exception) -> None:
        link, self._link = self._link, None
        if link is not None and link.transport is not None:
            link.transport.abort()
        self._fail_waiting(error)

    # ---- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        link, self._link = self._link, None
        if link is not None and link.transport is not None:
            with contextlib.suppress(RuntimeError):  # its event loop is already closed
                link.transport.close()
        with contextlib.suppress(RuntimeError):
            self._fail_waiting(RedisConnectionError("connection closed"))


def _fail(batch: Sequence[Pending], error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)


def _consume(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # failures reached the batch's futures already


def for_client(client: Any) -> MultiplexedConnection | None:
    """A multiplexed connection with ``client``'s address, credentials, deadlines, response
    callbacks and circuit breaker (a ``breaker`` attribute, see ``resilience.GuardedRedis``);
    None when the client is not a plain TCP client returning bytes (``plain_tcp_options``)."""
    options = plain_tcp_options(client)
    if options is None or options.get("decode_responses"):
        return None
    callbacks = getattr(client, "response_callbacks", None) or {}
    return MultiplexedConnection(
        options.get("host", "localhost"),
        int(options.get("port", 6379)),
        db=int(options.get("db", 0) or 0),
        protocol=int(options.get("protocol") or DEFAULT_RESP_VERSION),
        username=options.get("username"),
        password=options.get("password"),
        timeout_s=options.get("socket_timeout"),
        connect_timeout_s=options.get("socket_connect_timeout"),
        callbacks={str(k).upper(): v for k, v in dict(callbacks).items()},
        breaker=getattr(client, "breaker", None),
    )
