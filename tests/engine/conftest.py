"""Engine fixtures: Inventory factories on the shared Redis, under the test's key prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from model import small_layout

from kai_inventory.engine.connection import client_for_url
from kai_inventory.engine.inventory import Inventory
from kai_inventory.engine.keys import Keys
from kai_inventory.engine.layout import Layout

InventoryFactory = Callable[..., Awaitable[Inventory]]


@pytest.fixture(params=["single", "cluster"])
def engine_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    """The same test body against one Redis and against a 3-master Redis Cluster (started
    once per session). Keys are isolated by ``key_prefix``; the cluster is thrown away."""
    if request.param == "single":
        return redis_url
    cluster = request.getfixturevalue("redis_cluster")
    return str(cluster.url)


@pytest.fixture
async def inventory_factory(redis_url: str, key_prefix: str) -> AsyncIterator[InventoryFactory]:
    """``await create(test_clock=False)``: a fresh Inventory (own client) with scripts loaded."""
    clients: list[aioredis.Redis] = []

    async def create(*, test_clock: bool = False, url: str | None = None) -> Inventory:
        client = client_for_url(url or redis_url)
        clients.append(client)  # type: ignore[arg-type]
        inventory = Inventory(client, Keys(key_prefix), test_clock=test_clock)  # type: ignore[arg-type]
        await inventory.load_scripts()
        return inventory

    yield create
    for client in clients:
        await client.aclose()


@pytest.fixture
async def inventory(inventory_factory: InventoryFactory) -> Inventory:
    return await inventory_factory(test_clock=True)


@pytest.fixture
def make_layout() -> Callable[..., Layout]:
    return small_layout
