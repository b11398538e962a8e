"""The engine's Python face: one ``Inventory`` method per Lua script, results as msgspec Structs.

Seat and leg arguments are internal indices of the schedule's ``Layout`` (see ``layout.py``).
Every call goes through the auto-pipeline, so calls made in the same event-loop tick share one
round trip. Scripts that take indices also take the layout id they were computed with; when
the schedule's layout changed meanwhile the script answers LAYOUT_MISMATCH, and the call is
translated (by seat id and station code) onto the fresh layout and retried once.

The client must be created with ``decode_responses=False`` (bitmaps are binary).

On Redis Cluster (a ``RedisCluster`` client) every script touches one slot, the schedule's; the
user-side bookkeeping of a hold runs in the user's slot before (``user_reserve``) and after
(``user_finalize``) the schedule's script, and the due index and schedule directory are kept
per group ``{g:<k>}`` by this class. See docs/SCALING.md.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec
import redis.asyncio as aioredis

from kai_inventory.engine.codes import Code, code_of
from kai_inventory.engine.connection import is_cluster_client, use_hiredis_packing
from kai_inventory.engine.keys import GROUPS, Keys
from kai_inventory.engine.layout import Layout
from kai_inventory.engine.pipeline import AutoPipeline
from kai_inventory.engine.scripts import ScriptRegistry
from kai_inventory.engine.views import Snapshot

log = logging.getLogger(__name__)

SoldEntry = tuple[int, int, list[int]]  # (a, b, seat indices)

# Cluster: how long a user_reserve reservation counts without its user_finalize
RESERVATION_MS = 30_000
# Cluster: how long a command is retried through a failover or resharding before it fails
CLUSTER_RETRY_S = 10.0
_LIVE = ("held", "confirming")

_HOLD_FIELDS = ("user", "a", "b", "seats", "st", "exp", "ts", "bk")
_JSON = msgspec.json.Encoder()


def new_hold_id(schedule_id: str) -> str:
    return f"{schedule_id}.{secrets.token_urlsafe(16)}"


def schedule_of_hold(hold_id: str) -> str | None:
    schedule_id, dot, token = hold_id.partition(".")
    if not dot or not schedule_id or not token or "." in token:
        return None
    if len(schedule_id) > 64 or not all(c.isalnum() or c in "_-" for c in schedule_id):
        return None
    if len(token) > 64 or not all(c.isalnum() or c in "_-" for c in token):
        return None
    return schedule_id


class Hold(msgspec.Struct, frozen=True):
    hold_id: str
    schedule_id: str
    user: str
    a: int
    b: int
    seats: list[int]
    status: str  # held | confirming | confirmed | released | expired
    expires_ms: int
    created_ms: int
    booking_number: str | None = None


class HoldRequest(msgspec.Struct, frozen=True):
    schedule_id: str
    user: str
    a: int
    b: int
    ttl_ms: int
    seats: list[int] | None = None
    seat_class: str | None = None
    count: int = 0
    max_active: int = 0  # 0 = off
    rate_per_min: int = 0  # 0 = off
    idempotency_key: str | None = None
    body_hash: str | None = None
    strategy: str = "best"  # or "first"


class HoldOutcome(msgspec.Struct, frozen=True):
    code: Code
    hold: Hold | None = None
    unavailable: list[int] = []
    available: int = 0
    retry_after_ms: int = 0
    replayed: bool = False


class OpenResult(msgspec.Struct, frozen=True):
    code: Code
    created: bool = False
    changed: bool = False


def _str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _int(value: Any) -> int:
    return int(value) if value not in (None, b"", "") else 0


def _seats(value: Any) -> list[int]:
    text = _str(value)
    return [int(x) for x in text.split(",")] if text else []


def _first_score(reply: Any) -> int | None:
    """The score of a ``ZRANGE key 0 0 WITHSCORES`` reply; None for an empty zset. A plain
    Redis (RESP2, raw) answers ``[member, score]``, redis-py's cluster client
    ``[[member, score]]``."""
    if not reply:
        return None
    first = reply[0]
    score = first[1] if isinstance(first, (list, tuple)) else reply[1]
    return int(float(score))


_MADE_NOW_REPLY = 5  # the hold scripts' reply length for a hold made by this call


def _hold(schedule_id: str, fields: list[Any]) -> Hold:
    """From the scripts' hold tuple: hold_id, user, a, b, seats, status, exp, ts, booking."""
    booking = _str(fields[8]) if len(fields) > 8 and fields[8] else ""
    return Hold(
        hold_id=_str(fields[0]),
        schedule_id=schedule_id,
        user=_str(fields[1]),
        a=_int(fields[2]),
        b=_int(fields[3]),
        seats=_seats(fields[4]),
        status=_str(fields[5]),
        expires_ms=_int(fields[6]),
        created_ms=_int(fields[7]),
        booking_number=booking or None,
    )


def _translate(
    old: Layout, new: Layout, a: int, b: int, seats: list[int]
) -> tuple[int, int, list[int]] | None:
    """Indices of ``old`` moved onto ``new`` by station code and seat id; None if any is gone."""
    if not (0 <= a < b <= old.n_legs) or any(not 0 <= i < old.n_seats for i in seats):
        return None
    legs = new.leg_range(old.stops[a], old.stops[b])
    if legs is None:
        return None
    moved = [new.seat_index(old.seat_ids[i]) for i in seats]
    if any(i is None for i in moved):
        return None
    return legs[0], legs[1], [i for i in moved if i is not None]


def _decodes(redis: Any) -> bool:
    kwargs = getattr(redis, "connection_kwargs", None)
    if kwargs is None:
        kwargs = redis.get_connection_kwargs()
    return bool(kwargs.get("decode_responses"))


class Inventory:
    def __init__(self, redis: aioredis.Redis, keys: Keys, *, test_clock: bool = False) -> None:
        if _decodes(redis):
            raise ValueError("Inventory needs a Redis client with decode_responses=False")
        self.redis = redis
        self.keys = keys
        self.cluster = is_cluster_client(redis)
        if not self.cluster:
            use_hiredis_packing(redis)  # the same bytes, packed in C (the hold path's FCALLs)
        self.pipeline = AutoPipeline(redis, retry_s=CLUSTER_RETRY_S if self.cluster else 0.0)
        self.scripts = ScriptRegistry(redis, self.pipeline, cluster=self.cluster)
        self._layouts: dict[str, Layout] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._class_cache: dict[tuple[str, str], tuple[int, int, str]] = {}
        self._test_clock = test_clock

    async def load_scripts(self) -> None:
        await self.scripts.load()

    def close(self) -> None:
        """Close the engine's own connection (the Redis client is the caller's to close)."""
        self.pipeline.close()

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> list[Any]:
        reply = await self.scripts.call(name, keys, args)
        if not isinstance(reply, list) or not reply:
            raise RuntimeError(f"{name}: unexpected reply {reply!r}")
        return reply

    # ---- layouts --------------------------------------------------------------------------

    async def layout(self, schedule_id: str) -> Layout | None:
        cached = self._layouts.get(schedule_id)
        if cached is not None:
            return cached
        return await self._reload_layout(schedule_id)

    async def _reload_layout(self, schedule_id: str) -> Layout | None:
        blob = await self.pipeline.execute("GET", self.keys.schedule(schedule_id).layout)
        if blob is None:
            self._layouts.pop(schedule_id, None)
            return None
        layout = Layout.decode(bytes(blob))
        self._layouts[schedule_id] = layout
        return layout

    # ---- open / status --------------------------------------------------------------------

    async def open(
        self,
        layout: Layout,
        status: str = "scheduled",
        delay_minutes: int = 0,
        reason: str = "",
        sold: list[SoldEntry] | None = None,
    ) -> OpenResult:
        sk = self.keys.schedule(layout.schedule_id)
        directory = sk.meta if self.cluster else self.keys.schedules  # stand-in on Cluster
        reply = await self._call(
            "open",
            [sk.meta, sk.layout, sk.sold, sk.taken, sk.deadlines, directory, sk.channel],
            [
                layout.schedule_id,
                layout.layout_id,
                layout.n_seats,
                layout.n_legs,
                layout.meta_departures(),
                layout.meta_classes(),
                layout.meta_cars(),
                layout.encode(),
                status,
                delay_minutes,
                reason,
                _JSON.encode([[a, b, list(seats)] for a, b, seats in sold or []]),
            ],
        )
        code = code_of(reply[0])
        if code != Code.OK:
            return OpenResult(code)
        if self.cluster:
            group = self.keys.group_of(layout.schedule_id)
            await self.pipeline.execute(
                "SADD", self.keys.schedules_group(group), layout.schedule_id
            )
        self._layouts[layout.schedule_id] = layout
        return OpenResult(code, created=bool(reply[1]), changed=bool(reply[2]))

    async def set_status(
        self, schedule_id: str, status: str, delay_minutes: int = 0, reason: str = ""
    ) -> Code:
        sk = self.keys.schedule(schedule_id)
        reply = await self._call(
            "status", [sk.meta, sk.taken, sk.deadlines, sk.channel], [status, delay_minutes, reason]
        )
        return code_of(reply[0])

    async def open_schedule_ids(self) -> list[str]:
        if not self.cluster:
            members = await self.pipeline.execute("SMEMBERS", self.keys.schedules)
            return sorted(_str(m) for m in members)
        groups = await asyncio.gather(
            *(
                self.pipeline.execute("SMEMBERS", self.keys.schedules_group(g))
                for g in range(GROUPS)
            )
        )
        return sorted({_str(m) for members in groups for m in members})

    # ---- Redis-loss markers (one per Redis; on Cluster one per master) ----------------------

    def epoch_markers(self) -> list[str]:
        """The marker keys: ``{g}:epoch`` on one Redis; on Cluster one ``{e:<tag>}`` key per
        master, the tag chosen so that the key lives on that master (current slot map)."""
        if not self.cluster:
            return [self.keys.epoch]
        cluster: Any = self.redis
        markers: list[str] = []
        for node in cluster.get_primaries():
            for i in range(100_000):
                key = self.keys.epoch_marker(str(i))
                if cluster.get_node_from_key(key).name == node.name:
                    markers.append(key)
                    break
        return markers

    async def missing_epochs(self) -> list[str]:
        """The markers that are gone: their Redis (or master) lost its data."""
        markers = self.epoch_markers()
        found = await asyncio.gather(*(self.pipeline.execute("EXISTS", m) for m in markers))
        return [m for m, present in zip(markers, found, strict=True) if not present]

    def on_markers_shards(self, markers: list[str]) -> Callable[[str], bool]:
        """A filter: is this schedule's data on the Redis (or a master) of these markers?"""
        if not self.cluster:
            return lambda _schedule_id: bool(markers)
        cluster: Any = self.redis
        nodes = {cluster.get_node_from_key(m).name for m in markers}
        return lambda sid: cluster.get_node_from_key(self.keys.schedule(sid).meta).name in nodes

    async def run_ids(self) -> tuple[str, ...]:
        """The ``run_id`` of each Redis server holding our data (one per master on Cluster).

        A changed run id means the server restarted, possibly from an older copy of its data
        (an AOF or replica behind Postgres), which a present epoch marker cannot tell.
        """
        if self.cluster:
            cluster: Any = self.redis
            replies = await cluster.info("server", target_nodes=cluster.PRIMARIES)
            return tuple(sorted(str(info["run_id"]) for info in replies.values()))
        info = await self.redis.info("server")
        return (str(info["run_id"]),)

    async def epoch_present(self) -> bool:
        return not await self.missing_epochs()

    async def set_epoch(self, markers: list[str] | None = None) -> None:
        await asyncio.gather(
            *(
                self.pipeline.execute("SET", m, secrets.token_hex(8))
                for m in (self.epoch_markers() if markers is None else markers)
            )
        )

    # ---- holds ----------------------------------------------------------------------------

    async def hold(self, req: HoldRequest) -> HoldOutcome:
        layout = await self.layout(req.schedule_id)
        if layout is None:
            return HoldOutcome(Code.SCHEDULE_NOT_FOUND)
        hold_id = new_hold_id(req.schedule_id)
        outcome = await self._hold_once(req, layout, hold_id)
        if outcome.code != Code.LAYOUT_MISMATCH:
            return outcome
        fresh = await self._reload_layout(req.schedule_id)
        if fresh is None:
            return HoldOutcome(Code.SCHEDULE_NOT_FOUND)
        if req.seats is not None:
            moved = _translate(layout, fresh, req.a, req.b, req.seats)
            if moved is None:
                return HoldOutcome(Code.LAYOUT_MISMATCH)
            req = msgspec.structs.replace(req, a=moved[0], b=moved[1], seats=moved[2])
        else:
            moved = _translate(layout, fresh, req.a, req.b, [])
            if moved is None:
                return HoldOutcome(Code.LAYOUT_MISMATCH)
            req = msgspec.structs.replace(req, a=moved[0], b=moved[1])
        return await self._hold_once(req, fresh, hold_id)

    def _hold_once(
        self, req: HoldRequest, layout: Layout, hold_id: str
    ) -> Coroutine[Any, Any, HoldOutcome]:
        if self.cluster:
            return self._hold_cluster(req, layout, hold_id)
        return self._hold_script(req, layout, hold_id)

    async def _hold_cluster(self, req: HoldRequest, layout: Layout, hold_id: str) -> HoldOutcome:
        """user_reserve (user's slot) -> the hold script (schedule's slot) -> user_finalize and
        the due index (pipelined with the tick's other calls)."""
        sk = self.keys.schedule(req.schedule_id)
        uk = self.keys.user(req.user)
        idem = bool(req.idempotency_key)
        user_keys = [uk.holds, uk.rate, uk.idempotency(req.idempotency_key or "")]
        toff = 0
        if self._test_clock:
            toff = _int(await self.pipeline.execute("HGET", sk.meta, "toff"))
        rate = req.rate_per_min
        for attempt in range(2):
            reply = await self._call(
                "user_reserve",
                user_keys,
                [
                    toff,
                    hold_id,
                    "1" if idem else "0",
                    req.body_hash or "",
                    rate,
                    req.max_active,
                    RESERVATION_MS,
                ],
            )
            code = code_of(reply[0])
            if code == Code.RATE_LIMITED:
                return HoldOutcome(code, retry_after_ms=int(reply[1]))
            if code != Code.OK:
                return HoldOutcome(code)
            at_limit = bool(reply[2])
            if not at_limit or attempt:
                break
            # at the limit: drop the places of holds that ended since (ended holds are not
            # removed from the user's slot by the schedule scripts on Cluster), then retry
            ended = await self._ended([_str(m) for m in reply[4]])
            if not ended:
                break
            await self.pipeline.execute("ZREM", uk.holds, *ended)
            rate = 0  # this attempt was counted already
        hid = _str(reply[1])
        if bool(reply[3]) and schedule_of_hold(hid) != req.schedule_id:
            return HoldOutcome(Code.IDEMPOTENCY_CONFLICT)
        outcome = await self._hold_script(
            msgspec.structs.replace(req, max_active=-1 if at_limit else 0, rate_per_min=0),
            layout,
            hid,
            idem_key=sk.idempotency(req.user, req.idempotency_key or ""),
        )
        made = outcome.hold is not None and not outcome.replayed
        post: list[Awaitable[Any]] = []
        if (req.max_active > 0 or idem) and not outcome.replayed:  # a replay changes nothing
            post.append(
                self._call(
                    "user_finalize",
                    [uk.holds, uk.idempotency(req.idempotency_key or "")],
                    [
                        hid,
                        "held" if made else "none",
                        outcome.hold.expires_ms if outcome.hold else 0,
                        "1" if idem else "0",
                        req.body_hash or "",
                        "1" if req.max_active > 0 else "0",
                    ],
                )
            )
        if made and outcome.hold is not None:
            post.append(self._due_lower(req.schedule_id, outcome.hold.expires_ms))
        for result in await asyncio.gather(*post, return_exceptions=True):
            if isinstance(result, Exception):  # the reservation ends by itself; sweep_due
                log.warning("hold %s: user/due bookkeeping failed: %s", hid, result)
        return outcome

    async def _ended(self, hold_ids: list[str]) -> list[str]:
        """The holds among these that exist and ended. A missing hold is a reservation still
        in flight (or of a caller that died): it is kept and ends with its own score."""
        holds = await asyncio.gather(*(self.get_hold(h) for h in hold_ids))
        return [
            h
            for h, hold in zip(hold_ids, holds, strict=True)
            if hold is not None and hold.status not in _LIVE
        ]

    def _due_key(self, schedule_id: str) -> str:
        if not self.cluster:
            return self.keys.due
        return self.keys.due_group(self.keys.group_of(schedule_id))

    async def _due_lower(self, schedule_id: str, deadline_ms: int) -> None:
        await self.pipeline.execute(
            "ZADD", self._due_key(schedule_id), "LT", deadline_ms, schedule_id
        )

    async def _hold_script(
        self, req: HoldRequest, layout: Layout, hold_id: str, idem_key: str | None = None
    ) -> HoldOutcome:
        sk = self.keys.schedule(req.schedule_id)
        if self.cluster:  # one slot: stand-ins (never touched) for the user and global keys
            user_holds = user_rate = due = sk.meta
        else:
            uk = self.keys.user(req.user)
            user_holds, user_rate, due = uk.holds, uk.rate, self.keys.due
            idem_key = uk.idempotency(req.idempotency_key or "")
        keys = [
            sk.meta,
            sk.taken,
            sk.deadlines,
            sk.hold(hold_id),
            user_holds,
            user_rate,
            idem_key or "",
            due,
            sk.channel,
        ]
        args: list[Any] = [
            layout.layout_id,
            hold_id,
            req.user,
            req.schedule_id,
            req.a,
            req.b,
            req.ttl_ms,
            req.max_active,
            req.rate_per_min,
            "1" if req.idempotency_key else "0",
            req.body_hash or "",
        ]
        if req.seats is not None:
            reply = await self._call(
                "hold_seats", keys, [*args, ",".join(str(i) for i in req.seats)]
            )
        elif req.seat_class is not None:
            args += [*self._class_args(layout, req.seat_class), req.count, req.strategy]
            reply = await self._call("hold_class", keys, args)
        else:
            return HoldOutcome(Code.INVALID_ARGUMENT)
        code = code_of(reply[0])
        if code == Code.OK:
            if len(reply) == _MADE_NOW_REPLY:  # {OK, 0, seats, expires, created}: made now
                hold = Hold(
                    hold_id=hold_id,
                    schedule_id=req.schedule_id,
                    user=req.user,
                    a=req.a,
                    b=req.b,
                    seats=_seats(reply[2]),
                    status="held",
                    expires_ms=int(reply[3]),
                    created_ms=int(reply[4]),
                )
                return HoldOutcome(code, hold=hold)
            return HoldOutcome(
                code, hold=_hold(req.schedule_id, reply[2:]), replayed=bool(reply[1])
            )
        if code == Code.SEATS_UNAVAILABLE:
            return HoldOutcome(code, unavailable=[int(i) for i in reply[1]])
        if code == Code.INSUFFICIENT_INVENTORY:
            return HoldOutcome(code, available=int(reply[1]))
        if code == Code.RATE_LIMITED:
            return HoldOutcome(code, retry_after_ms=int(reply[1]))
        return HoldOutcome(code)

    def _class_args(self, layout: Layout, seat_class: str) -> tuple[int, int, str]:
        """hold_class's class_start, class_end and car list, computed once per layout and
        class (they were ~3% of a worker's CPU under the class-hold load)."""
        key = (layout.layout_id, seat_class)
        found = self._class_cache.get(key)
        if found is not None:
            return found
        span = layout.class_span(seat_class)
        cars = ",".join(f"{c.start}:{c.end}" for c in layout.cars_of_class(seat_class))
        found = (span.start if span else 0, span.end if span else 0, cars)
        if len(self._class_cache) >= 4096:
            self._class_cache.clear()
        self._class_cache[key] = found
        return found

    async def get_hold(self, hold_id: str) -> Hold | None:
        schedule_id = schedule_of_hold(hold_id)
        if schedule_id is None:
            return None
        sk = self.keys.schedule(schedule_id)
        fields, clock, toff = await asyncio.gather(
            self.pipeline.execute("HMGET", sk.hold(hold_id), *_HOLD_FIELDS),
            self.pipeline.execute("TIME"),
            self.pipeline.execute("HGET", sk.meta, "toff"),
        )
        if fields[0] is None:
            return None
        hold = _hold(schedule_id, [hold_id, *fields])
        now = int(clock[0]) * 1000 + int(clock[1]) // 1000 + _int(toff)
        if hold.status == "held" and now >= hold.expires_ms:
            # past its deadline, about to be reaped: never show it as held
            hold = msgspec.structs.replace(hold, status="expired")
        return hold

    async def release(self, hold_id: str, user: str | None) -> tuple[Code, Hold | None]:
        schedule_id = schedule_of_hold(hold_id)
        if schedule_id is None:
            return Code.HOLD_NOT_FOUND, None
        sk = self.keys.schedule(schedule_id)
        reply = await self._call(
            "release",
            [sk.meta, sk.taken, sk.deadlines, sk.hold(hold_id), sk.channel],
            [hold_id, user or ""],
        )
        code = code_of(reply[0])
        if code == Code.SCHEDULE_NOT_FOUND or len(reply) == 1:
            return Code.HOLD_NOT_FOUND, None
        return code, _hold(schedule_id, reply[1:])

    async def confirm_begin(
        self, hold_id: str, user: str | None, grace_ms: int = 30_000
    ) -> tuple[Code, Hold | None]:
        schedule_id = schedule_of_hold(hold_id)
        if schedule_id is None:
            return Code.HOLD_NOT_FOUND, None
        sk = self.keys.schedule(schedule_id)
        reply = await self._call(
            "confirm_begin",
            [sk.meta, sk.taken, sk.deadlines, sk.hold(hold_id), sk.channel],
            [hold_id, user or "", grace_ms],
        )
        code = code_of(reply[0])
        if code == Code.SCHEDULE_NOT_FOUND or len(reply) == 1:
            return (Code.HOLD_NOT_FOUND if code == Code.SCHEDULE_NOT_FOUND else code), None
        return code, _hold(schedule_id, reply[1:])

    async def confirm_abort(self, hold_id: str) -> Code:
        schedule_id = schedule_of_hold(hold_id)
        if schedule_id is None:
            return Code.HOLD_NOT_FOUND
        sk = self.keys.schedule(schedule_id)
        due = sk.meta if self.cluster else self.keys.due
        reply = await self._call(
            "confirm_abort",
            [sk.meta, sk.taken, sk.deadlines, sk.hold(hold_id), due, sk.channel],
            [hold_id, schedule_id],
        )
        code = code_of(reply[0])
        if self.cluster and len(reply) > 1 and int(reply[1]) >= 0:
            await self._due_lower(schedule_id, int(reply[1]))
        return Code.HOLD_NOT_FOUND if code == Code.SCHEDULE_NOT_FOUND else code

    async def confirm(self, hold_id: str, booking_number: str) -> Code:
        schedule_id = schedule_of_hold(hold_id)
        if schedule_id is None:
            return Code.HOLD_NOT_FOUND
        sk = self.keys.schedule(schedule_id)
        reply = await self._call(
            "confirm",
            [sk.meta, sk.sold, sk.taken, sk.deadlines, sk.hold(hold_id), sk.channel],
            [hold_id, booking_number],
        )
        code = code_of(reply[0])
        return Code.HOLD_NOT_FOUND if code == Code.SCHEDULE_NOT_FOUND else code

    # ---- sold seat-legs -------------------------------------------------------------------

    async def cancel(self, schedule_id: str, a: int, b: int, seats: list[int]) -> Code:
        layout = await self.layout(schedule_id)
        if layout is None:
            return Code.SCHEDULE_NOT_FOUND
        sk = self.keys.schedule(schedule_id)
        keys = [sk.meta, sk.sold, sk.taken, sk.deadlines, sk.channel]

        async def attempt(lay: Layout, a: int, b: int, seats: list[int]) -> Code:
            reply = await self._call(
                "cancel", keys, [lay.layout_id, a, b, ",".join(str(i) for i in seats)]
            )
            return code_of(reply[0])

        code = await attempt(layout, a, b, seats)
        if code != Code.LAYOUT_MISMATCH:
            return code
        fresh = await self._reload_layout(schedule_id)
        if fresh is None:
            return Code.SCHEDULE_NOT_FOUND
        moved = _translate(layout, fresh, a, b, seats)
        if moved is None:
            return Code.LAYOUT_MISMATCH
        return await attempt(fresh, *moved)

    async def restore(self, schedule_id: str, sold: list[SoldEntry], replace: bool = True) -> Code:
        layout = await self.layout(schedule_id)
        if layout is None:
            return Code.SCHEDULE_NOT_FOUND
        sk = self.keys.schedule(schedule_id)
        keys = [sk.meta, sk.sold, sk.taken, sk.deadlines, sk.channel]

        async def attempt(lay: Layout, entries: list[SoldEntry]) -> Code:
            body = _JSON.encode([[a, b, list(seats)] for a, b, seats in entries])
            reply = await self._call(
                "restore", keys, [lay.layout_id, "1" if replace else "0", body]
            )
            return code_of(reply[0])

        code = await attempt(layout, sold)
        if code != Code.LAYOUT_MISMATCH:
            return code
        fresh = await self._reload_layout(schedule_id)
        if fresh is None:
            return Code.SCHEDULE_NOT_FOUND
        moved_all: list[SoldEntry] = []
        for a, b, seats in sold:
            moved = _translate(layout, fresh, a, b, seats)
            if moved is None:
                return Code.LAYOUT_MISMATCH
            moved_all.append(moved)
        return await attempt(fresh, moved_all)

    # ---- expiry ---------------------------------------------------------------------------

    async def reap(self, schedule_id: str, limit: int = 0) -> int:
        sk = self.keys.schedule(schedule_id)
        due = sk.meta if self.cluster else self.keys.due
        reply = await self._call(
            "reap", [sk.meta, sk.taken, sk.deadlines, due, sk.channel], [schedule_id, limit]
        )
        if self.cluster:
            await self._due_refresh(schedule_id, int(reply[3]) if len(reply) > 3 else -1)
        return int(reply[1])

    async def _due_refresh(self, schedule_id: str, next_deadline: int) -> None:
        """Cluster: set the schedule's due score to its next deadline (reap.lua does it itself
        on one Redis). Raise first, then lower from a fresh read: a hold made meanwhile, whose
        own ``ZADD LT`` met the old (lower) score, is not lost."""
        due = self._due_key(schedule_id)
        if next_deadline < 0:
            await self.pipeline.execute("ZREM", due, schedule_id)
        else:
            await self.pipeline.execute("ZADD", due, next_deadline, schedule_id)
        first = _first_score(
            await self.pipeline.execute(
                "ZRANGE", self.keys.schedule(schedule_id).deadlines, 0, 0, "WITHSCORES"
            )
        )
        if first is not None:
            await self._due_lower(schedule_id, first)

    async def _now_ms(self) -> int:
        clock = await self.pipeline.execute("TIME")
        return int(clock[0]) * 1000 + int(clock[1]) // 1000

    async def reap_due(self, limit: int = 200) -> int:
        """One background reaper tick: reap every schedule whose earliest deadline has passed."""
        now = await self._now_ms()
        due_keys = (
            [self.keys.due_group(g) for g in range(GROUPS)] if self.cluster else [self.keys.due]
        )
        found = await asyncio.gather(
            *(
                self.pipeline.execute("ZRANGEBYSCORE", key, "-inf", now, "LIMIT", 0, limit)
                for key in due_keys
            )
        )
        due = [_str(sid) for members in found for sid in members]
        if not due:
            return 0
        counts = await asyncio.gather(*(self.reap(sid, 1000) for sid in due))
        return sum(counts)

    async def sweep_due(self) -> int:
        """Cluster: put every open schedule's earliest deadline back into the due index (a
        process that died between a hold and its due update leaves it out). Returns how many
        schedules have live holds."""
        ids = await self.open_schedule_ids()
        firsts = await asyncio.gather(
            *(
                self.pipeline.execute("ZRANGE", self.keys.schedule(s).deadlines, 0, 0, "WITHSCORES")
                for s in ids
            )
        )
        scores = [(s, _first_score(f)) for s, f in zip(ids, firsts, strict=True)]
        live = [(s, d) for s, d in scores if d is not None]
        await asyncio.gather(*(self._due_lower(s, d) for s, d in live))
        return len(live)

    async def live_holds(self) -> int:
        """Holds not yet ended (held or confirming), over every open schedule."""
        ids = await self.open_schedule_ids()
        counts = await asyncio.gather(
            *(self.pipeline.execute("ZCARD", self.keys.schedule(s).deadlines) for s in ids)
        )
        return sum(int(c) for c in counts)

    async def expired_total(self) -> int:
        """Holds freed by expiry, as counted by the Redis servers' scripts: every ``reap()``
        (each write script's own, and the background reaper's ``reap.lua``) adds the holds it
        expired to a library-level counter of the Functions library (``lua/lib/common.lua``);
        this is the sum of that counter over the servers (one Redis; every master on Cluster).
        It counts every process's reaps of this key prefix (not of others sharing the Redis),
        and starts again at 0 on a server that restarted or lost its functions
        (``load_scripts`` keeps a library already there)."""
        replies = await self.scripts.call_on_every_server("expired_total", [self.keys.prefix])
        return sum(int(r) for r in replies)

    # ---- reads ----------------------------------------------------------------------------

    async def snapshot(self, schedule_id: str) -> Snapshot | None:
        sk = self.keys.schedule(schedule_id)
        cached = self._snapshots.get(schedule_id)
        reply = await self._call(
            "snapshot",
            [sk.meta, sk.sold, sk.taken, sk.deadlines, sk.channel],
            [cached.version if cached else -1],
        )
        if code_of(reply[0]) != Code.OK:
            self._snapshots.pop(schedule_id, None)
            self._layouts.pop(schedule_id, None)
            return None
        version = int(reply[1])
        if reply[6] is None:
            if cached is not None and cached.version == version:
                return cached
            return await self.snapshot(schedule_id)  # raced with a cache drop: read in full
        snap = Snapshot(
            schedule_id=schedule_id,
            version=version,
            status=_str(reply[2]),
            delay_minutes=_int(reply[3]),
            reason=_str(reply[4] or b""),
            layout_id=_str(reply[5]),
            sold=bytes(reply[6]),
            taken=bytes(reply[7]),
        )
        current = self._snapshots.get(schedule_id)
        if current is None or current.version <= version:
            self._snapshots[schedule_id] = snap
        layout = self._layouts.get(schedule_id)
        if layout is not None and layout.layout_id != snap.layout_id:
            self._layouts.pop(schedule_id, None)
        return snap

    # ---- tests only -----------------------------------------------------------------------

    async def advance_clock(self, schedule_id: str, ms: int) -> None:
        """Move this schedule's script clock forward (meta ``toff``). Tests only: refused
        unless the Inventory was made with ``test_clock=True``."""
        if not self._test_clock:
            raise RuntimeError("advance_clock is a test hook: construct Inventory(test_clock=True)")
        await self.pipeline.execute("HINCRBY", self.keys.schedule(schedule_id).meta, "toff", ms)
