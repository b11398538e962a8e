"""One frozen settings object, read from the environment once at start-up.

Every variable has a default that works on a developer machine. A malformed value, or an
unknown ``KAI_*`` variable (usually a typo), stops start-up with a message naming it.
"""

from __future__ import annotations

import dataclasses
import os
import zoneinfo
from collections.abc import Callable, Mapping
from typing import Any

DEV_JWT_SECRET = "kai-dev-secret-change-me-not-for-production"  # noqa: S105  # nosec B105 (dev default)


class SettingsError(ValueError):
    """A setting is unknown or malformed; the message names the variable."""


def _int(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw.strip())
        if value < lo or (hi is not None and value > hi):
            bound = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise ValueError(f"must be an integer {bound}")
        return value

    return parse


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be 0/1 (or true/false)")


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if not any(value.startswith(f"{s}://") for s in schemes):
            raise ValueError(f"must start with one of {', '.join(s + '://' for s in schemes)}")
        return value

    return parse


def _timezone(raw: str) -> str:
    try:
        zoneinfo.ZoneInfo(raw.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("must be an IANA time zone such as Asia/Jakarta") from exc
    return raw.strip()


def _secret(raw: str) -> str:
    if len(raw) < 16:
        raise ValueError("must be at least 16 characters")
    return raw


def _prefix(raw: str) -> str:
    value = raw.strip()
    if not value or not all(c.isalnum() or c in "-_." for c in value) or len(value) > 64:
        raise ValueError("must be 1..64 characters of [A-Za-z0-9._-]")
    return value


def _origins(raw: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in raw.split(",") if o.strip())


def _text(raw: str) -> str:
    return raw.strip()


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    database_url: str = "postgresql://postgres@127.0.0.1:5432/kai"
    jwt_secret: str = DEV_JWT_SECRET
    hold_ttl_s: int = 600
    max_hold_ttl_s: int = 1800
    max_seats_per_hold: int = 4
    max_active_holds_per_user: int = 3
    hold_rate_per_min: int = 30
    timezone: str = "Asia/Jakarta"
    ws_coalesce_ms: int = 50
    anonymous_reads: bool = True
    key_prefix: str = "kai"
    allowed_origins: tuple[str, ...] = ()
    demo: bool = False
    log_level: str = "INFO"
    drain_s: int = 10
    reconcile_interval_s: int = 30
    redis_timeout_ms: int = 300

    @property
    def is_cluster(self) -> bool:
        return self.redis_cluster or self.redis_url.startswith("redis+cluster://")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# variable name -> (field, parser)
_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "REDIS_URL": ("redis_url", _url("redis", "rediss", "redis+cluster", "unix")),
    "KAI_REDIS_CLUSTER": ("redis_cluster", _bool),
    "DATABASE_URL": ("database_url", _url("postgresql", "postgres")),
    "KAI_JWT_SECRET": ("jwt_secret", _secret),
    "KAI_HOLD_TTL_S": ("hold_ttl_s", _int(1, 86_400)),
    "KAI_MAX_HOLD_TTL_S": ("max_hold_ttl_s", _int(1, 86_400)),
    "KAI_MAX_SEATS_PER_HOLD": ("max_seats_per_hold", _int(0, 5_000)),
    "KAI_MAX_ACTIVE_HOLDS_PER_USER": ("max_active_holds_per_user", _int(0)),
    "KAI_HOLD_RATE_PER_MIN": ("hold_rate_per_min", _int(0)),
    "KAI_TIMEZONE": ("timezone", _timezone),
    "KAI_WS_COALESCE_MS": ("ws_coalesce_ms", _int(0, 10_000)),
    "KAI_ANONYMOUS_READS": ("anonymous_reads", _bool),
    "KAI_KEY_PREFIX": ("key_prefix", _prefix),
    "KAI_ALLOWED_ORIGINS": ("allowed_origins", _origins),
    "KAI_DEMO": ("demo", _bool),
    "KAI_LOG_LEVEL": ("log_level", _text),
    "KAI_DRAIN_S": ("drain_s", _int(0, 600)),
    "KAI_RECONCILE_INTERVAL_S": ("reconcile_interval_s", _int(1, 3_600)),
    "KAI_REDIS_TIMEOUT_MS": ("redis_timeout_ms", _int(50, 60_000)),
}

# KAI_* variables that belong to tooling around the service, not to the service itself.
_TOOLING = {"KAI_STATE_DIR", "KAI_TEST_REDIS_URL", "KAI_TEST_DATABASE_URL", "KAI_BASE_URL"}
# Test-only fault hook (tests/faults, docs/RELIABILITY.md): a file path; see sales.py.
_TOOLING.add("KAI_FAULT_CRASH_AFTER_COMMIT")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, raw in env.items():
        if name in _VARIABLES:
            field, parse = _VARIABLES[name]
            try:
                values[field] = parse(raw)
            except ValueError as exc:
                raise SettingsError(f"{name}={raw!r} is malformed: {exc}") from None
        elif name.startswith("KAI_") and name not in _TOOLING:
            raise SettingsError(f"{name} is not a known setting (known: {', '.join(_VARIABLES)})")
    settings = Settings(**values)
    if settings.max_hold_ttl_s and settings.hold_ttl_s > settings.max_hold_ttl_s:
        raise SettingsError(
            f"KAI_HOLD_TTL_S={settings.hold_ttl_s} exceeds "
            f"KAI_MAX_HOLD_TTL_S={settings.max_hold_ttl_s}"
        )
    return settings
