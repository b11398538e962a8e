"""Use cases that need both stores: open a schedule, confirm, cancel, rebuild, reconcile.

Postgres is the source of truth for the catalogue and every sale; Redis is the fast working
copy. The rule that keeps them honest: a seat-leg is marked sold in Redis only after its
booking committed in Postgres, and whatever Redis lost or missed is put back from Postgres
(rebuild when Redis lost a schedule or all its data, reconcile for single bookings).

- ``outcomes``: what the use cases answer (the API encodes these).
- ``core``: store access and failure mapping shared by the rest.
- ``recovery``: rebuild, verify/repair, reconcile, the Redis-loss epoch watch.
- ``peak_sales``: the waiting room's sale PUT (Postgres, then Redis) and restore.
- ``service``: ``Sales``: catalogue, reads, confirm, cancel (plus recovery, inherited).
- ``commands``: ``kai-inventory rebuild`` / ``verify``.
"""

from kai_inventory.persist.qr import verify_qr
from kai_inventory.sales.commands import connect_redis, open_sales, rebuild_command, verify_command
from kai_inventory.sales.core import build_layout
from kai_inventory.sales.outcomes import (
    CancelOutcome,
    ConfirmOutcome,
    DependencyUnavailable,
    Difference,
    PutOutcome,
    ScheduleView,
    SearchResult,
    StopTime,
)
from kai_inventory.sales.service import Sales

__all__ = [
    "CancelOutcome",
    "ConfirmOutcome",
    "DependencyUnavailable",
    "Difference",
    "PutOutcome",
    "Sales",
    "ScheduleView",
    "SearchResult",
    "StopTime",
    "build_layout",
    "connect_redis",
    "open_sales",
    "rebuild_command",
    "verify_command",
    "verify_qr",
]
