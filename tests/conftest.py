"""Shared fixtures: a real Redis and a real Postgres, isolated per test run.

Redis isolation is by key prefix (random per test, its keys deleted afterwards), never by
flushing the server. Postgres isolation is a private database per test session.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from kai_inventory.settings import Settings

REDIS_URL = os.environ.get("KAI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_DSN = os.environ.get(
    "KAI_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    prefix = "t" + secrets.token_hex(6)
    yield prefix

    async def cleanup() -> None:
        client = aioredis.from_url(redis_url)
        try:
            batch = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
            for i in range(0, len(batch), 500):
                await client.delete(*batch[i : i + 500])
        finally:
            await client.aclose()

    asyncio.run(cleanup())


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    return PG_ADMIN_DSN


def _with_database(dsn: str, database: str) -> str:
    head, _, _ = dsn.rpartition("/")
    return f"{head}/{database}"


@pytest.fixture(scope="session")
def pg_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A private, empty database for this test session (migrated by the fixtures that need it)."""
    name = f"kai_test_{os.getpid()}_{secrets.token_hex(3)}"

    async def create() -> None:
        conn = await asyncpg.connect(pg_admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(pg_admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    yield _with_database(pg_admin_dsn, name)
    asyncio.run(drop())


@pytest.fixture
def settings(redis_url: str, pg_dsn: str, key_prefix: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        database_url=pg_dsn,
        key_prefix=key_prefix,
        jwt_secret="test-secret-0123456789abcdef",
    )


# --- Postgres schema and sales fixtures (persistence) -------------------------------------------


@pytest.fixture(scope="session")
def migrated_dsn(pg_dsn: str) -> str:
    """The session database with every migration applied (shared by tests that need the schema)."""
    from kai_inventory.persist.migrate import migrate_up

    async def up() -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await migrate_up(conn)
        finally:
            await conn.close()

    asyncio.run(up())
    return pg_dsn


@pytest.fixture
async def pool(migrated_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(migrated_dsn, min_size=1, max_size=5)
    assert created is not None
    yield created
    await created.close()


@pytest.fixture
async def sales(settings: Settings, migrated_dsn: str) -> AsyncIterator[object]:
    """Inventory + Sales on the test's key prefix and the migrated session database."""
    from kai_inventory.engine.inventory import Inventory
    from kai_inventory.engine.keys import Keys
    from kai_inventory.persist.db import create_pool
    from kai_inventory.sales import Sales

    client = aioredis.from_url(settings.redis_url)
    pg = await create_pool(settings, min_size=1, max_size=5)
    inventory = Inventory(client, Keys(settings.key_prefix), test_clock=True)
    await inventory.load_scripts()
    yield Sales(settings, inventory, pg)
    await pg.close()
    await client.aclose()


@pytest.fixture
async def private_db(pg_admin_dsn: str) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Factory: ``await private_db(migrated=True)`` creates a database of the test's own (dropped
    after the test) and returns its DSN."""
    names: list[str] = []

    async def create(migrated: bool = True) -> str:
        from kai_inventory.persist.migrate import migrate_up

        name = f"kai_test_{os.getpid()}_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(pg_admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        names.append(name)
        dsn = _with_database(pg_admin_dsn, name)
        if migrated:
            conn = await asyncpg.connect(dsn)
            try:
                await migrate_up(conn)
            finally:
                await conn.close()
        return dsn

    yield create
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[object]:
    """A private 3-master Redis Cluster on loopback (started once per test session, only when
    a test asks for it; see kai_inventory/localcluster.py). ``.url`` is
    ``redis+cluster://127.0.0.1:<port>``."""
    from kai_inventory.localcluster import local_cluster
    from kai_inventory.localstack import LocalStackError

    try:
        with local_cluster(3) as cluster:
            yield cluster
    except LocalStackError as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"cannot start a Redis Cluster: {exc}")
