"""The asyncpg pool and the one list of errors that mean "Postgres is unreachable"."""

from __future__ import annotations

import asyncio

import asyncpg

from kai_inventory.settings import Settings

# Raised by asyncpg when the server cannot be reached, the connection dropped, or the pool is
# closing. Sales turns these into DependencyUnavailable("postgres") (503 with Retry-After).
PG_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


async def create_pool(
    settings: Settings, *, min_size: int = 1, max_size: int = 10, command_timeout: float = 10.0
) -> asyncpg.Pool:
    """A pool on ``settings.database_url``; connection attempts give up after 5 s."""
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        timeout=5.0,
        max_inactive_connection_lifetime=300.0,
    )
    if pool is None:  # only when the pool is used as an awaitable twice
        raise RuntimeError("asyncpg.create_pool returned no pool")
    return pool
