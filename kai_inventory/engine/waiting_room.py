"""The peak-sale waiting room: one ``WaitingRoom`` method per Lua script (``lua/sale_*.lua``,
``lua/queue_*.lua``, ``lua/admission_check.lua``), results as msgspec Structs.

Everything that decides is in Redis and atomic: a sale's keys share the hash tag ``{q:<sale>}``
(``SaleKeys``), so each script touches one Cluster slot. The admission tick may run in every
process at once: its token bucket lives in Redis and is filled from Redis ``TIME``, so the sale
admits ``admit_per_s`` in total however many loops tick it. The sale directory (which schedule
is in which active sale) lives under ``{g}`` and is cached per process, refreshed every second,
so the hold path pays a dict lookup when no sale is active.

Admission tokens are HS256 JWTs under a key derived from ``KAI_JWT_SECRET`` (never the bearer
token key), bound to the user, the sale and the admission's serial number; Redis has the last
word (a returned, idle or expired admission stops working at once). See docs/WAITING_ROOM.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import Any

import jwt
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from kai_inventory.engine.keys import Keys, SaleKeys
from kai_inventory.engine.pipeline import AutoPipeline
from kai_inventory.engine.scripts import ScriptRegistry

_LOG = logging.getLogger(__name__)
_TOKEN_LABEL = b"kai-inventory/admission/v1"
_TOKEN_TYPE = "kai-admission"  # noqa: S105  # nosec B105 (a claim value)
_RANDOM = secrets.SystemRandom()
_MSGPACK = msgspec.msgpack.Encoder()
DEFAULT_TICK_LIMIT = 1000  # most users admitted (and returned) by one tick call


class QCode(enum.IntEnum):
    """Waiting-room reply codes, mirrored by ``lua/lib/queue_codes.lua`` (a test checks)."""

    OK = 0
    SALE_NOT_FOUND = -101
    SALE_NOT_OPEN = -102
    NOT_IN_QUEUE = -103
    NOT_ADMITTED = -104
    ADMISSION_EXPIRED = -105
    SALE_CONFLICT = -106
    INVALID_ARGUMENT = -107


class SaleConfig(msgspec.Struct, frozen=True):
    """A sale as the engine stores it (times in epoch ms)."""

    sale_id: str
    schedules: list[str]
    opens_ms: int
    closes_ms: int
    admit_per_s: int
    max_admitted: int
    idle_ms: int
    admission_ttl_ms: int


class PutSaleResult(msgspec.Struct, frozen=True):
    code: QCode
    created: bool = False
    changed: bool = False
    conflict_schedule: str | None = None
    conflict_sale: str | None = None


class Place(msgspec.Struct, frozen=True):
    """A user's place in a sale's queue. ``ahead`` counts waiting users before this one.

    ``base`` = ``ahead + popped``: once the sale is open it stays fixed while the user waits
    (admission pops from the head, later joiners go to the tail), so a watcher can follow the
    position from the sale's ``popped`` counter alone.
    """

    code: QCode
    sale_id: str
    user: str
    ticket: int = 0
    admitted: bool = False
    joined_ms: int = 0
    ahead: int = 0
    popped: int = 0
    waiting: int = 0
    admitted_count: int = 0
    opens_ms: int = 0
    closes_ms: int = 0
    admit_per_s: int = 0
    now_ms: int = 0
    serial: int = 0
    admission_expires_ms: int = 0
    created: bool = False
    max_admitted: int = 0

    @property
    def position(self) -> int:
        """1-based place among the waiting; 0 once admitted."""
        return 0 if self.admitted else self.ahead + 1

    @property
    def base(self) -> int:
        return self.ahead + self.popped

    @property
    def estimated_wait_s(self) -> int:
        return (
            0
            if self.admitted
            else estimate_wait_s(self.ahead, self.admit_per_s, self.opens_ms, self.now_ms)
        )


class TickResult(msgspec.Struct, frozen=True):
    sale_id: str
    code: QCode
    admitted: int = 0  # by this call
    returned: int = 0  # lapsed admissions taken back by this call
    waiting: int = 0
    admitted_now: int = 0  # admitted at once after this call
    now_ms: int = 0
    popped: int = 0  # admitted since the sale began
    users: list[str] = []  # admitted by this call, in order
    waits_ms: list[int] = []  # how long each of them waited


class CheckResult(msgspec.Struct, frozen=True):
    code: QCode
    expires_ms: int = 0


class Watched(msgspec.Struct, frozen=True):
    """Where one watched user stands: waiting (``rank`` >= 0), admitted, or without a place."""

    user: str
    rank: int  # >= 0 waiting, -2 admitted, -1 no place
    serial: int = 0
    expires_ms: int = 0


class WatchResult(msgspec.Struct, frozen=True):
    code: QCode
    popped: int = 0
    waiting: int = 0
    admitted: int = 0
    opens_ms: int = 0
    closes_ms: int = 0
    admit_per_s: int = 0
    now_ms: int = 0
    users: list[Watched] = []


class AdmissionClaims(msgspec.Struct, frozen=True):
    user: str
    sale_id: str
    serial: int
    expires_ms: int


class HoldAdmission(msgspec.Struct, frozen=True):
    """The hold path's verdict: ``sale_id`` None means no active sale covers the schedule."""

    allowed: bool
    sale_id: str | None = None
    reason: str = ""  # missing | invalid | other_user | other_sale | not_admitted | expired


def estimate_wait_s(ahead: int, admit_per_s: int, opens_ms: int, now_ms: int) -> int:
    """Seconds until a user with ``ahead`` users before them is admitted, at the sale's rate."""
    before_opening = max(0, opens_ms - now_ms) / 1000
    return math.ceil(before_opening + (ahead + 1) / max(1, admit_per_s))


class AdmissionTokens:
    """Signs and verifies admission tokens (HS256, key derived from the service secret)."""

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), _TOKEN_LABEL, hashlib.sha256).digest()

    def mint(self, user: str, sale_id: str, serial: int, expires_ms: int) -> str:
        """Deterministic for one admission: asking again gives the same token."""
        claims = {
            "typ": _TOKEN_TYPE,
            "sub": user,
            "sale": sale_id,
            "n": serial,
            "exp": math.ceil(expires_ms / 1000),
            "exp_ms": expires_ms,
        }
        return jwt.encode(claims, self._key, algorithm="HS256")

    def verify(self, token: str, now_s: float | None = None) -> AdmissionClaims | None:
        """The claims when the signature holds and the token has not expired, else None."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                options={"require": ["exp", "sub"]},
            )
        except jwt.InvalidTokenError:
            return None
        try:
            parsed = AdmissionClaims(
                user=str(claims["sub"]),
                sale_id=str(claims["sale"]),
                serial=int(claims["n"]),
                expires_ms=int(claims["exp_ms"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        if claims.get("typ") != _TOKEN_TYPE:
            return None
        now = time.time() if now_s is None else now_s
        if parsed.expires_ms <= now * 1000:
            return None
        return parsed


def _int(value: Any) -> int:
    return int(value)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class WaitingRoom:
    """The waiting room's Python face. One per process; shares the engine's script registry."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        secret: str,
        *,
        scripts: ScriptRegistry | None = None,
        pipeline: AutoPipeline | None = None,
        directory_ttl_s: float = 1.0,
    ) -> None:
        """``pipeline``: share another's connection (the engine's); the room then leaves it
        open on ``close``. Without one the room opens its own."""
        self.redis = redis
        self.keys = keys
        self.tokens = AdmissionTokens(secret)
        self._owns_pipeline = pipeline is None
        self.pipeline = AutoPipeline(redis) if pipeline is None else pipeline
        self.scripts = scripts if scripts is not None else ScriptRegistry(redis, self.pipeline)
        self._directory: dict[str, tuple[str, int]] = {}  # schedule -> (sale, closes ms)
        self._sales: dict[str, int] = {}  # sale -> closes ms
        self._directory_at = -math.inf
        self._directory_ttl_s = directory_ttl_s

    def close(self) -> None:
        """Close the room's own connection (the Redis client is the caller's to close)."""
        if self._owns_pipeline:
            self.pipeline.close()

    def sale_keys(self, sale_id: str) -> SaleKeys:
        return SaleKeys.of(self.keys, sale_id)

    async def _call(self, name: str, sale_id: str, args: list[Any]) -> list[Any]:
        reply = await self.scripts.call(name, self.sale_keys(sale_id).all(), args)
        if not isinstance(reply, list) or not reply:
            raise RuntimeError(f"{name}: unexpected reply {reply!r}")
        return reply

    # ---- sales ---------------------------------------------------------------------------

    async def put_sale(self, sale: SaleConfig) -> PutSaleResult:
        """Create or update a sale: claim its schedules (at most one active sale each), then
        store its settings. Moving ``opens_ms`` once the sale has opened is INVALID_ARGUMENT."""
        current = await self.get_sale(sale.sale_id)
        if (
            current is not None
            and current.opens_ms != sale.opens_ms
            and current.opens_ms <= await self.now_ms()
        ):
            return PutSaleResult(QCode.INVALID_ARGUMENT)
        claim = await self.scripts.call(
            "sale_claim",
            [SaleKeys.claims(self.keys), SaleKeys.index(self.keys)],
            [sale.sale_id, sale.closes_ms, ",".join(sale.schedules)],
        )
        if _int(claim[0]) != QCode.OK:
            return PutSaleResult(
                QCode(_int(claim[0])),
                conflict_schedule=_text(claim[1]),
                conflict_sale=_text(claim[2]),
            )
        reply = await self._call(
            "sale_put",
            sale.sale_id,
            [
                sale.opens_ms,
                sale.closes_ms,
                sale.admit_per_s,
                sale.max_admitted,
                sale.idle_ms,
                sale.admission_ttl_ms,
                ",".join(sale.schedules),
            ],
        )
        code = QCode(_int(reply[0]))
        if code != QCode.OK:
            return PutSaleResult(code)
        for schedule in list(self._directory):
            if self._directory[schedule][0] == sale.sale_id:
                del self._directory[schedule]
        for schedule in sale.schedules:
            self._directory[schedule] = (sale.sale_id, sale.closes_ms)
        self._sales[sale.sale_id] = sale.closes_ms
        return PutSaleResult(code, created=bool(_int(reply[1])), changed=bool(_int(reply[2])))

    async def get_sale(self, sale_id: str) -> SaleConfig | None:
        raw = await self.pipeline.execute("HGETALL", self.sale_keys(sale_id).cfg)
        if not raw:
            return None
        if isinstance(raw, list):  # RESP2 without response callbacks: flat pairs
            raw = dict(zip(raw[::2], raw[1::2], strict=True))
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if "opens" not in fields:
            return None
        return SaleConfig(
            sale_id=sale_id,
            schedules=[s for s in fields.get("sch", "").split(",") if s],
            opens_ms=int(fields["opens"]),
            closes_ms=int(fields["closes"]),
            admit_per_s=int(fields["rate"]),
            max_admitted=int(fields["max"]),
            idle_ms=int(fields["idle"]),
            admission_ttl_ms=int(fields["ttl"]),
        )

    async def now_ms(self) -> int:
        sec, usec = await self.pipeline.execute("TIME")
        return int(sec) * 1000 + int(usec) // 1000

    # ---- queue ---------------------------------------------------------------------------

    def _place(self, sale_id: str, user: str, reply: list[Any]) -> Place:
        code = QCode(_int(reply[0]))
        if code != QCode.OK:
            return Place(code, sale_id, user)
        v = [_int(x) for x in reply[1:16]]
        return Place(
            code,
            sale_id,
            user,
            admitted=bool(v[0]),
            ticket=v[1],
            joined_ms=v[2],
            ahead=v[3],
            popped=v[4],
            waiting=v[5],
            admitted_count=v[6],
            opens_ms=v[7],
            closes_ms=v[8],
            admit_per_s=v[9],
            now_ms=v[10],
            serial=v[11],
            admission_expires_ms=v[12],
            created=bool(v[13]),
            max_admitted=v[14],
        )

    async def join(self, sale_id: str, user: str) -> Place:
        """Take a place (or get one's place back). Before the opening the place's order is a
        random draw made here, by the server; after it, the order of arrival."""
        draw = repr(_RANDOM.random())
        return self._place(sale_id, user, await self._call("queue_join", sale_id, [user, draw]))

    async def status(self, sale_id: str, user: str) -> Place:
        return self._place(sale_id, user, await self._call("queue_status", sale_id, [user]))

    def token_for(self, place: Place) -> str | None:
        if not place.admitted:
            return None
        return self.tokens.mint(place.user, place.sale_id, place.serial, place.admission_expires_ms)

    async def tick(self, sale_id: str, limit: int = DEFAULT_TICK_LIMIT) -> TickResult:
        """One admission tick of one sale (return lapsed admissions, admit at the rate)."""
        reply = await self._call("queue_admit", sale_id, [limit])
        code = QCode(_int(reply[0]))
        if code != QCode.OK:
            return TickResult(sale_id, code)
        extra = reply[7:]
        return TickResult(
            sale_id,
            code,
            admitted=_int(reply[1]),
            returned=_int(reply[2]),
            waiting=_int(reply[3]),
            admitted_now=_int(reply[4]),
            now_ms=_int(reply[5]),
            popped=_int(reply[6]),
            users=[_text(u) for u in extra[::2]],
            waits_ms=[_int(w) for w in extra[1::2]],
        )

    async def check(self, sale_id: str, user: str, serial: int) -> CheckResult:
        reply = await self._call("admission_check", sale_id, [user, serial])
        code = QCode(_int(reply[0]))
        return CheckResult(code, _int(reply[1]) if code == QCode.OK else 0)

    async def watch(self, sale_id: str, users: list[str]) -> WatchResult:
        """The sale's counters and where each given user stands (read only)."""
        reply = await self._call("queue_watch", sale_id, [_MSGPACK.encode(users)])
        code = QCode(_int(reply[0]))
        if code != QCode.OK:
            return WatchResult(code)
        v = [_int(x) for x in reply[1:]]
        return WatchResult(
            code,
            popped=v[0],
            waiting=v[1],
            admitted=v[2],
            opens_ms=v[3],
            closes_ms=v[4],
            admit_per_s=v[5],
            now_ms=v[6],
            users=[
                Watched(user, v[7 + 3 * i], v[8 + 3 * i], v[9 + 3 * i])
                for i, user in enumerate(users)
            ],
        )

    # ---- the sale directory and the hold path --------------------------------------------

    async def refresh_directory(self) -> None:
        """Reload schedule -> active sale, and the list of sales to tick (one round trip each)."""
        claims = await self.pipeline.execute("HGETALL", SaleKeys.claims(self.keys))
        now = await self.now_ms()
        sales = await self.pipeline.execute(
            "ZRANGEBYSCORE", SaleKeys.index(self.keys), now, "+inf", "WITHSCORES"
        )
        if isinstance(claims, list):
            claims = dict(zip(claims[::2], claims[1::2], strict=True))
        directory: dict[str, tuple[str, int]] = {}
        for schedule, value in claims.items():
            sale, _, closes = _text(value).rpartition("|")
            directory[_text(schedule)] = (sale, int(closes))
        if sales and not isinstance(sales[0], (list, tuple)):
            sales = list(zip(sales[::2], sales[1::2], strict=True))
        self._sales = {_text(s): int(float(c)) for s, c in sales}
        self._directory = directory
        self._directory_at = time.monotonic()

    async def ensure_directory(self) -> None:
        if time.monotonic() - self._directory_at >= self._directory_ttl_s:
            await self.refresh_directory()

    def active_sale(self, schedule_id: str, now_ms: int | None = None) -> str | None:
        """The sale (not yet closed) that covers the schedule, from the per-process cache."""
        entry = self._directory.get(schedule_id)
        if entry is None:
            return None
        now = time.time() * 1000 if now_ms is None else now_ms
        return entry[0] if now < entry[1] else None

    def active_sales(self, now_ms: int | None = None) -> list[str]:
        now = time.time() * 1000 if now_ms is None else now_ms
        return [sale for sale, closes in self._sales.items() if now < closes]

    async def check_hold(self, schedule_id: str, user: str, token: str | None) -> HoldAdmission:
        """May ``user`` hold on ``schedule_id`` now? A dict lookup when no sale covers it;
        else the token's signature and binding, then one Redis script (which also counts as
        the user's activity for the idle rule)."""
        sale_id = self.active_sale(schedule_id)
        if sale_id is None:
            return HoldAdmission(True)
        if not token:
            return HoldAdmission(False, sale_id, "missing")
        claims = self.tokens.verify(token)
        if claims is None:
            return HoldAdmission(False, sale_id, "invalid")
        if claims.user != user:
            return HoldAdmission(False, sale_id, "other_user")
        if claims.sale_id != sale_id:
            return HoldAdmission(False, sale_id, "other_sale")
        result = await self.check(sale_id, user, claims.serial)
        if result.code == QCode.OK:
            return HoldAdmission(True, sale_id)
        if result.code == QCode.SALE_NOT_FOUND:  # claim without settings (half-written PUT)
            return HoldAdmission(True)
        reason = "expired" if result.code == QCode.ADMISSION_EXPIRED else "not_admitted"
        return HoldAdmission(False, sale_id, reason)


async def run_admission(
    room: WaitingRoom,
    stop: asyncio.Event,
    *,
    interval_s: float = 0.1,
    on_tick: Callable[[list[TickResult]], None] | None = None,
) -> None:
    """Tick every active sale every ``interval_s`` until ``stop`` is set. Safe in every process
    at once (the rate is enforced in Redis). ``on_tick(results)`` gets each round's results."""
    while not stop.is_set():
        try:
            await room.ensure_directory()
            sales = room.active_sales()
            results = await asyncio.gather(*(room.tick(s) for s in sales)) if sales else []
            if on_tick is not None:
                on_tick(list(results))
        except (TimeoutError, OSError, RedisError) as exc:
            _LOG.warning("admission tick failed (next round retries): %s", exc)
        except Exception:  # a bug in one round must not stop admission for good
            _LOG.exception("admission tick failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
