"""The asyncpg pool, its deadlines, and the one list of errors that mean "Postgres is
unreachable".

Deadlines (degrade, never hang; docs/RELIABILITY.md). The contract names no setting for them,
so they are constants here, the one place they are set:

- ``CONNECT_TIMEOUT_S``: a new connection (TCP, startup, authentication);
- ``ACQUIRE_TIMEOUT_S``: waiting for a pooled connection, a new one included; asyncpg also
  bounds the connection's release (its reset round trip) by it;
- ``COMMAND_TIMEOUT_S``: each statement. A statement that times out makes asyncpg send a
  cancel request, itself bounded by the same timeout, which the next statement on that
  connection (a transaction's ROLLBACK) waits for.

So a Postgres that accepts and never answers costs a sales call 1 to 2 s (1.5 s when it needed
a new connection; 1 s for a statement, 2 s when the ROLLBACK of its transaction waits for the
cancel request) before its 503, where it was 10 s and more with the 10 s command timeout this
pool had. A statement of this service takes milliseconds; one that takes a second is an outage
for a seat sale, not a query to wait for.
"""

from __future__ import annotations

import asyncio

import asyncpg

from kai_inventory.settings import Settings

CONNECT_TIMEOUT_S = 1.5
ACQUIRE_TIMEOUT_S = 1.5
COMMAND_TIMEOUT_S = 1.0

# Raised by asyncpg when the server cannot be reached, the connection dropped, a deadline
# passed, or the pool is closing. Sales turns these into DependencyUnavailable("postgres")
# (503 with Retry-After).
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
    settings: Settings,
    *,
    min_size: int = 1,
    max_size: int = 10,
    command_timeout: float = COMMAND_TIMEOUT_S,
) -> asyncpg.Pool:
    """A pool on ``settings.database_url`` with the deadlines above. Acquire with
    ``pool.acquire(timeout=ACQUIRE_TIMEOUT_S)``."""
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        timeout=CONNECT_TIMEOUT_S,
        max_inactive_connection_lifetime=300.0,
    )
    if pool is None:  # only when the pool is used as an awaitable twice
        raise RuntimeError("asyncpg.create_pool returned no pool")
    return pool
