"""What the running service holds: one object per process, stored on the aiohttp app.

``app.py`` builds it; ``api`` and ``ws`` read it through ``CTX``. Fields are filled in by the
layer that owns them (engine, persist, sales, ws).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from aiohttp import web

from kai_inventory.settings import Settings

if TYPE_CHECKING:
    import asyncpg
    import redis.asyncio as aioredis

    from kai_inventory.engine.inventory import Inventory
    from kai_inventory.sales import Sales


@dataclasses.dataclass
class AppContext:
    settings: Settings
    redis: aioredis.Redis
    inventory: Inventory
    pool: asyncpg.Pool
    sales: Sales


CTX = web.AppKey("kai_ctx", AppContext)
