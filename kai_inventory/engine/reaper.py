"""The background reaper: frees the seats of expired holds on schedules nobody writes to.

Every write script reaps its own schedule first; this loop covers idle schedules. Each tick
asks the global ``due`` zset (schedule id -> earliest deadline; on Redis Cluster one per group
``{g:<k>}``) for schedules whose deadline passed and runs ``reap.lua`` on each. Reaping is
idempotent, so every process may run it. On Cluster a process that died between a hold and
its due update could leave a deadline out of the index, so every ``SWEEP_EVERY_S`` the loop
also puts each open schedule's earliest deadline back (``Inventory.sweep_due``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.exceptions import RedisError

from kai_inventory.engine.inventory import Inventory

log = logging.getLogger(__name__)


SWEEP_EVERY_S = 60.0


async def run_reaper(inventory: Inventory, stop: asyncio.Event, interval_s: float = 0.25) -> None:
    last_sweep = time.monotonic()
    while not stop.is_set():
        try:
            await inventory.reap_due()
            if inventory.cluster and time.monotonic() - last_sweep >= SWEEP_EVERY_S:
                last_sweep = time.monotonic()
                await inventory.sweep_due()
        except (RedisError, OSError) as exc:  # Redis away: keep trying, quietly
            log.warning("reaper tick failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
