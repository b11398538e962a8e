"""The Redis client for a settings object: one Redis, or Redis Cluster.

``REDIS_URL=redis+cluster://host:port`` (or ``redis_cluster=True`` / ``KAI_REDIS_CLUSTER=1``
with a ``redis://`` URL naming any one node) gives redis-py's
:class:`redis.asyncio.cluster.RedisCluster`; anything else a plain :class:`redis.asyncio.Redis`.
Both are created with ``decode_responses=False`` (the engine's bitmaps are binary).

The cluster client follows MOVED/ASK itself and refreshes its slot map; the engine's script
registry adds a bounded retry for a cluster that is briefly down (failover), see
``engine/scripts.py``.

``use_hiredis_packing(client)`` makes a plain client's new connections pack commands with
``hiredis.pack_command`` (C) instead of redis-py's Python loop: packing an FCALL of ~30
arguments was ~10% of a worker's CPU under the hold load (docs/PERFORMANCE.md, "Hold path").
The bytes sent are the same.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlsplit

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import DataError

CLUSTER_SCHEME = "redis+cluster://"


class _Cluster(RedisCluster):
    """RedisCluster that finds an FCALL's slot from its declared keys, as redis-py does for
    EVALSHA (for FCALL it would ask the server with COMMAND GETKEYS: one more round trip per
    call)."""

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if command.upper() in ("FCALL", "FCALL_RO") and len(args) >= 2 and int(args[1]) > 0:
            slots = {self.keyslot(key) for key in args[2 : 2 + int(args[1])]}
            if len(slots) == 1:
                return slots.pop()
        return await super()._determine_slot(command, *args)


def pack_command(args: tuple[Any, ...]) -> bytes:
    """RESP bytes of one command, packed by hiredis (C); the same bytes as redis-py's packer,
    which loops in Python over every argument."""
    # as redis-py: a command name with spaces ("FUNCTION LOAD") is split into words
    first = args[0]
    if isinstance(first, str):
        args = (*first.encode().split(), *args[1:])
    elif b" " in first:
        args = (*first.split(), *args[1:])
    try:
        return hiredis.pack_command(args)  # type: ignore[no-any-return]
    except TypeError as exc:  # None, bool, a list...: redis-py raises DataError too
        raise DataError(str(exc)) from exc


class HiredisPackConnection(aioredis.Connection):
    """A TCP connection that packs commands with :func:`pack_command`."""

    def pack_command(self, *args: Any) -> list[bytes]:
        return [pack_command(args)]


def plain_tcp_options(client: Any) -> dict[str, Any] | None:
    """The connection options of a plain TCP ``redis.asyncio.Redis`` whose strings encode as
    UTF-8 strict (what hiredis packing does); None otherwise (SSL, Unix socket, Cluster,
    another encoding, a fake)."""
    pool = getattr(client, "connection_pool", None)
    if pool is None or getattr(pool, "connection_class", None) not in (
        aioredis.Connection,
        HiredisPackConnection,
    ):
        return None
    options: dict[str, Any] = pool.connection_kwargs
    if str(options.get("encoding", "utf-8")).lower().replace("_", "-") not in ("utf-8", "utf8"):
        return None
    if options.get("encoding_errors", "strict") != "strict":
        return None
    return options


def use_hiredis_packing(client: Any) -> bool:
    """Switch a plain client's pool to ``HiredisPackConnection`` (connections made from now on).
    False, and nothing changed, when ``plain_tcp_options`` refuses the client."""
    if plain_tcp_options(client) is None:
        return False
    client.connection_pool.connection_class = HiredisPackConnection
    return True


class RedisSettings(Protocol):
    @property
    def redis_url(self) -> str: ...


def is_cluster_settings(settings: RedisSettings) -> bool:
    return bool(getattr(settings, "redis_cluster", False)) or settings.redis_url.startswith(
        CLUSTER_SCHEME
    )


def is_cluster_client(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def cluster_url(url: str) -> str:
    """``redis+cluster://h:p`` -> ``redis://h:p`` (what redis-py's from_url expects)."""
    if url.startswith(CLUSTER_SCHEME):
        return "redis://" + url[len(CLUSTER_SCHEME) :]
    return url


class _Url:
    def __init__(self, url: str) -> None:
        self.redis_url = url


def client_for_url(url: str, **kwargs: Any) -> aioredis.Redis | RedisCluster:
    """``create_redis`` for a bare URL (``redis+cluster://`` selects Cluster)."""
    return create_redis(_Url(url), **kwargs)


def create_redis(settings: RedisSettings, **kwargs: Any) -> aioredis.Redis | RedisCluster:
    """A client for ``settings.redis_url``: Redis Cluster when the settings say so."""
    options: dict[str, Any] = {"decode_responses": False, **kwargs}
    if is_cluster_settings(settings):
        url = urlsplit(cluster_url(settings.redis_url))
        options.setdefault("retry", Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=6))
        options.setdefault("require_full_coverage", False)
        return _Cluster(
            host=url.hostname or "127.0.0.1",
            port=url.port or 6379,
            password=url.password,
            username=url.username,
            ssl=url.scheme == "rediss",
            **options,
        )
    client = aioredis.from_url(settings.redis_url, **options)
    use_hiredis_packing(client)
    return client
