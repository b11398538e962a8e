"""The operator commands over sales: `kai-inventory rebuild` and `kai-inventory verify`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

from kai_inventory.engine.inventory import Inventory
from kai_inventory.engine.keys import Keys
from kai_inventory.persist.db import create_pool
from kai_inventory.resilience import create_service_redis
from kai_inventory.sales.outcomes import DependencyUnavailable
from kai_inventory.sales.service import Sales
from kai_inventory.settings import Settings

log = logging.getLogger(__name__)

CLI_COMMAND_TIMEOUT_S = 300.0


def connect_redis(settings: Settings) -> aioredis.Redis:
    # one Redis or Redis Cluster (redis+cluster:// / KAI_REDIS_CLUSTER): engine/connection.py
    return create_service_redis(settings)


@asynccontextmanager
async def open_sales(settings: Settings) -> AsyncIterator[Sales]:
    """A Sales with its own Redis client and Postgres pool (CLI commands, scripts)."""
    client = connect_redis(settings)
    # operator commands may scan every open schedule: the request path's 1 s statement
    # deadline (persist/db.py) is for answering buyers, not for a rebuild or a verify
    pool = await create_pool(
        settings, min_size=1, max_size=4, command_timeout=CLI_COMMAND_TIMEOUT_S
    )
    try:
        inventory = Inventory(client, Keys(settings.key_prefix))
        await inventory.load_scripts()
        yield Sales(settings, inventory, pool)
    finally:
        await pool.close()
        await client.aclose()


async def _rebuild(settings: Settings, schedule_id: str | None) -> int:
    async with open_sales(settings) as sales:
        count = await sales.rebuild(schedule_id, trigger="operator")
        if schedule_id is None:
            await sales.inventory.set_epoch()
    print(f"rebuilt {count} schedule(s) from Postgres")
    return 0 if count or schedule_id is None else 1


def rebuild_command(settings: Settings, args: argparse.Namespace) -> int:
    """``kai-inventory rebuild [--schedule ID]``."""
    try:
        return asyncio.run(_rebuild(settings, getattr(args, "schedule", None)))
    except DependencyUnavailable as exc:
        print(f"kai-inventory rebuild: {exc}", file=sys.stderr)
        return 1


async def _verify(settings: Settings, repair: bool) -> int:
    async with open_sales(settings) as sales:
        ids = await sales._open_ids(None)
        disagreements = 0
        for sid in ids:
            diffs = await sales.differences(sid)
            for d in diffs:
                print(d.describe())
            if diffs and repair:
                await sales.repair(sid, diffs)
                diffs = await sales.differences(sid)
                print(f"{sid}: repaired" if not diffs else f"{sid}: still differs after repair")
            disagreements += bool(diffs)
        print(f"checked {len(ids)} schedule(s); {disagreements} disagree")
    return 0 if disagreements == 0 else 1


def verify_command(settings: Settings, args: argparse.Namespace) -> int:
    """``kai-inventory verify [--repair]``: exit 0 when Redis agrees with Postgres."""
    try:
        return asyncio.run(_verify(settings, bool(getattr(args, "repair", False))))
    except DependencyUnavailable as exc:
        print(f"kai-inventory verify: {exc}", file=sys.stderr)
        return 1
