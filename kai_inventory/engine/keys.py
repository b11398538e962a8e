"""Every Redis key and channel the service uses is built here, and nowhere else.

All keys of one schedule share the hash tag ``{s:<schedule_id>}`` so that each script touches
a single Redis Cluster slot. Per-user keys share ``{u:<user>}``.

On Redis Cluster the global ``{g}`` keys are split into ``GROUPS`` groups ``{g:<k>}`` (a
schedule's group is ``crc32(id) % GROUPS``) so that the due index and the schedule directory
spread over the shards, and the Redis-loss marker is one key per master, ``{e:<tag>}``, with a
tag chosen to hash into a slot that master serves (see docs/SCALING.md).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field

GROUPS = 16


@dataclass(frozen=True, slots=True)
class ScheduleKeys:
    """A schedule's key names, joined once (``Keys.schedule`` keeps them per schedule: the hold
    and read paths use five or six of them per call)."""

    schedule_id: str
    base: str  # "<prefix>:{s:<id>}:"
    meta: str = field(init=False)
    layout: str = field(init=False)
    sold: str = field(init=False)
    taken: str = field(init=False)
    deadlines: str = field(init=False)
    channel: str = field(init=False)
    hold_prefix: str = field(init=False)

    def __post_init__(self) -> None:
        base = self.base
        for name, suffix in (
            ("meta", "meta"),
            ("layout", "layout"),
            ("sold", "sold"),
            ("taken", "taken"),
            ("deadlines", "deadlines"),
            ("channel", "events"),
            ("hold_prefix", "hold:"),
        ):
            object.__setattr__(self, name, base + suffix)

    def hold(self, hold_id: str) -> str:
        return self.hold_prefix + hold_id

    def idempotency(self, user: str, key: str) -> str:
        """Cluster only: the idempotency record kept in the schedule's slot, written by the
        script that makes the hold (the user's slot holds a pointer to it)."""
        return f"{self.base}idem:{user}:{key}"


@dataclass(frozen=True, slots=True)
class UserKeys:
    user: str
    base: str  # "<prefix>:{u:<user>}:"

    @property
    def holds(self) -> str:
        return self.base + "holds"

    @property
    def rate(self) -> str:
        return self.base + "rate"

    def idempotency(self, key: str) -> str:
        return self.base + "idem:" + key


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder for one key prefix (tests use a random prefix each)."""

    prefix: str = "kai"

    @functools.lru_cache(maxsize=16384)  # noqa: B019  (Keys objects live as long as the app)
    def schedule(self, schedule_id: str) -> ScheduleKeys:
        return ScheduleKeys(schedule_id, f"{self.prefix}:{{s:{schedule_id}}}:")

    def user(self, user: str) -> UserKeys:
        return UserKeys(user, f"{self.prefix}:{{u:{user}}}:")

    @property
    def schedules(self) -> str:
        """Set of schedule ids whose inventory is open in Redis."""
        return f"{self.prefix}:{{g}}:schedules"

    @property
    def due(self) -> str:
        """Sorted set: schedule id -> earliest hold deadline (ms), for the background reaper."""
        return f"{self.prefix}:{{g}}:due"

    @property
    def epoch(self) -> str:
        """Marker whose absence tells that Redis lost its data and must be rebuilt."""
        return f"{self.prefix}:{{g}}:epoch"

    # ---- Redis Cluster: the global keys split per group, the loss marker per master ----

    @staticmethod
    def group_of(schedule_id: str) -> int:
        return zlib.crc32(schedule_id.encode()) % GROUPS

    def due_group(self, group: int) -> str:
        return f"{self.prefix}:{{g:{group}}}:due"

    def schedules_group(self, group: int) -> str:
        return f"{self.prefix}:{{g:{group}}}:schedules"

    def epoch_marker(self, tag: str) -> str:
        return f"{self.prefix}:{{e:{tag}}}:epoch"

    @property
    def user_prefix(self) -> str:
        return f"{self.prefix}:{{u:"

    @property
    def schedule_channel_pattern(self) -> str:
        return f"{self.prefix}:{{s:*}}:events"

    def schedule_id_from_channel(self, channel: str) -> str:
        head = f"{self.prefix}:{{s:"
        return channel[len(head) : channel.rindex("}:events")]


# ---- peak-sale waiting room (appended by the waiting-room issue; see docs/WAITING_ROOM.md) ----


@dataclass(frozen=True, slots=True)
class SaleKeys:
    """Keys of one sale's waiting room. All share the hash tag ``{q:<sale_id>}`` (one slot).

    The sale directory (schedule -> claiming sale, and the list of sales) lives under ``{g}``.
    """

    sale_id: str
    base: str  # "<prefix>:{q:<sale_id>}:"

    @classmethod
    def of(cls, keys: Keys, sale_id: str) -> SaleKeys:
        return cls(sale_id, f"{keys.prefix}:{{q:{sale_id}}}:")

    @property
    def cfg(self) -> str:
        """Hash: the sale's settings, its token bucket and counters (joins, popped, serial)."""
        return self.base + "cfg"

    @property
    def queue(self) -> str:
        """Sorted set: waiting user -> place score (pre-opening joiners < 1 <= later joiners)."""
        return self.base + "queue"

    @property
    def places(self) -> str:
        """Hash: user -> "<ticket>:<joined ms>" for every user with a place (waiting, admitted)."""
        return self.base + "places"

    @property
    def admissions(self) -> str:
        """Hash: admitted user -> "<serial>:<admitted ms>:<expires ms>"."""
        return self.base + "adm"

    @property
    def admission_expiry(self) -> str:
        """Sorted set: admitted user -> hard expiry ms (admitted + admission_ttl)."""
        return self.base + "adm_exp"

    @property
    def admission_idle(self) -> str:
        """Sorted set: admitted user -> idle deadline ms (last request + idle)."""
        return self.base + "adm_idle"

    def all(self) -> list[str]:
        """The six keys every per-sale script takes, in its KEYS order."""
        return [
            self.cfg,
            self.queue,
            self.places,
            self.admissions,
            self.admission_expiry,
            self.admission_idle,
        ]

    @staticmethod
    def claims(keys: Keys) -> str:
        """Hash: schedule id -> "<sale_id>|<closes ms>" (a schedule is in one active sale)."""
        return f"{keys.prefix}:{{g}}:sale_claims"

    @staticmethod
    def index(keys: Keys) -> str:
        """Sorted set: sale id -> closes ms (the sales the admission loops tick)."""
        return f"{keys.prefix}:{{g}}:sales"
