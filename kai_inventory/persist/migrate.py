"""Numbered plain-SQL migrations: ``migrations/NNNN_name.sql`` with ``-- migrate:up`` and
``-- migrate:down`` sections.

Each file runs in its own transaction (a section may opt out with ``-- migrate:up
transaction:false``, for ``CREATE INDEX CONCURRENTLY``). Applied files are recorded in
``schema_migrations`` with a SHA-256 of their text: a file edited after it was applied is refused
with an error naming it. A session advisory lock serialises runners, so replicas that start
together apply each migration exactly once (the second waits, then finds nothing pending).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import re
import sys
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import TypeAlias

import asyncpg

from kai_inventory.settings import Settings

# pg_advisory_lock key: a fixed 64-bit number ("kai-inventory migrations").
ADVISORY_LOCK_KEY = 0x4B41_4D49_4752_0001

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_SECTION_RE = re.compile(r"^--\s*migrate:(up|down)\b(.*)$", re.MULTILINE)

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """A migration cannot be applied or reverted; the message names the file and why."""


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: str
    checksum: str
    up: str
    down: str
    up_transaction: bool = True
    down_transaction: bool = True

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


@dataclasses.dataclass(frozen=True, slots=True)
class MigrationState:
    migration: Migration | None  # None: applied in the database, file missing here
    version: int
    name: str
    applied: bool
    checksum_ok: bool


def migrations_dir() -> Path:
    """The repository's ``migrations/`` (source checkout) or the copy shipped in the wheel."""
    source = Path(__file__).resolve().parents[2] / "migrations"
    if source.is_dir():
        return source
    shipped = resources.files("kai_inventory") / "migrations"
    return Path(str(shipped))


def parse_migration(path: Path) -> Migration:
    match = _FILE_RE.match(path.name)
    if not match:
        raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
    text = path.read_text(encoding="utf-8")
    sections: dict[str, tuple[str, bool]] = {}
    marks = list(_SECTION_RE.finditer(text))
    for i, mark in enumerate(marks):
        kind = mark.group(1)
        if kind in sections:
            raise MigrationError(f"{path.name}: more than one '-- migrate:{kind}' section")
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        transaction = "transaction:false" not in mark.group(2)
        sections[kind] = (text[mark.end() : end].strip(), transaction)
    if "up" not in sections or "down" not in sections:
        raise MigrationError(
            f"{path.name}: needs a '-- migrate:up' and a '-- migrate:down' section"
        )
    if not sections["up"][0]:
        raise MigrationError(f"{path.name}: the up section is empty")
    return Migration(
        version=int(match.group(1)),
        name=match.group(2),
        path=str(path),
        checksum=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        up=sections["up"][0],
        down=sections["down"][0],
        up_transaction=sections["up"][1],
        down_transaction=sections["down"][1],
    )


def load_migrations(directory: Path | None = None) -> list[Migration]:
    folder = directory or migrations_dir()
    found = [parse_migration(p) for p in sorted(folder.glob("*.sql"))]
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{folder}: two migration files share a version number")
    return found


Connectable: TypeAlias = asyncpg.Connection | asyncpg.Pool


@contextlib.asynccontextmanager
async def _locked(target: Connectable) -> AsyncIterator[asyncpg.Connection]:
    """A connection holding the migration advisory lock (waits for another runner to finish)."""
    if isinstance(target, asyncpg.Pool):
        async with target.acquire() as conn, _locked(conn) as locked:
            yield locked
        return
    conn = target
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        yield conn
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def _applied(conn: asyncpg.Connection) -> dict[int, tuple[str, str]]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    return {r["version"]: (r["name"], r["checksum"]) for r in rows}


def _check_checksums(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> None:
    for m in migrations:
        if m.version in applied and applied[m.version][1] != m.checksum:
            raise MigrationError(
                f"{m.filename} was edited after it was applied (checksum differs from the one "
                "recorded in schema_migrations); add a new migration instead of editing it"
            )


async def _run(
    conn: asyncpg.Connection, sql: str, transaction: bool, record: str, *args: object
) -> None:
    if transaction:
        async with conn.transaction():
            await conn.execute(sql)
            await conn.execute(record, *args)
    else:
        await conn.execute(sql)
        await conn.execute(record, *args)


async def migrate_up(
    target: Connectable, directory: Path | None = None, to: int | None = None
) -> list[Migration]:
    """Apply every pending migration (up to version ``to``); returns those applied here."""
    migrations = load_migrations(directory)
    done: list[Migration] = []
    async with _locked(target) as conn:
        applied = await _applied(conn)
        _check_checksums(migrations, applied)
        for m in migrations:
            if m.version in applied or (to is not None and m.version > to):
                continue
            try:
                await _run(
                    conn,
                    m.up,
                    m.up_transaction,
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version,
                    m.name,
                    m.checksum,
                )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{m.filename} (up) failed: {exc}") from exc
            done.append(m)
    return done


async def migrate_down(
    target: Connectable, to: int | None = None, directory: Path | None = None
) -> list[Migration]:
    """Revert applied migrations above version ``to`` (None: only the latest; 0: all)."""
    migrations = {m.version: m for m in load_migrations(directory)}
    done: list[Migration] = []
    async with _locked(target) as conn:
        applied = await _applied(conn)
        _check_checksums(list(migrations.values()), applied)
        versions = sorted(applied, reverse=True)
        versions = versions[:1] if to is None else [v for v in versions if v > to]
        for version in versions:
            m = migrations.get(version)
            if m is None:
                raise MigrationError(
                    f"version {version} ({applied[version][0]}) is applied but its file is missing"
                )
            try:
                await _run(
                    conn,
                    m.down or "SELECT 1",
                    m.down_transaction,
                    "DELETE FROM schema_migrations WHERE version = $1",
                    m.version,
                )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{m.filename} (down) failed: {exc}") from exc
            done.append(m)
    return done


async def status(conn: asyncpg.Connection, directory: Path | None = None) -> list[MigrationState]:
    migrations = load_migrations(directory)
    applied = await _applied(conn)
    states = [
        MigrationState(
            migration=m,
            version=m.version,
            name=m.name,
            applied=m.version in applied,
            checksum_ok=m.version not in applied or applied[m.version][1] == m.checksum,
        )
        for m in migrations
    ]
    known = {m.version for m in migrations}
    for version, (name, _) in sorted(applied.items()):
        if version not in known:
            states.append(MigrationState(None, version, name, applied=True, checksum_ok=False))
    return sorted(states, key=lambda s: s.version)


async def pending(conn: Connectable, directory: Path | None = None) -> list[Migration]:
    """Migrations not yet applied (empty: the schema is current; /readyz uses this)."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as c:
            return await pending(c, directory)
    applied = await _applied(conn)
    return [m for m in load_migrations(directory) if m.version not in applied]


async def _command(settings: Settings, args: argparse.Namespace) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        if args.action == "up":
            done = await migrate_up(conn)
            for m in done:
                print(f"applied  {m.filename}")
            if not done:
                print("nothing to apply: the schema is current")
        elif args.action == "down":
            to = getattr(args, "to", None)
            done = await migrate_down(conn, to=to)
            for m in done:
                print(f"reverted {m.filename}")
            if not done:
                print("nothing to revert")
        else:
            states = await status(conn)
            for s in states:
                mark = "applied" if s.applied else "pending"
                if s.applied and not s.checksum_ok:
                    mark = "EDITED" if s.migration else "MISSING"
                print(f"{s.version:04d}  {mark:8}  {s.name}")
            if any(not s.checksum_ok for s in states):
                return 1
    finally:
        await conn.close()
    return 0


def migrate_command(settings: Settings, args: argparse.Namespace) -> int:
    """``kai-inventory migrate up | down [--to VERSION] | status``."""
    try:
        return asyncio.run(_command(settings, args))
    except MigrationError as exc:
        print(f"kai-inventory migrate: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"kai-inventory migrate: cannot reach the database: {exc}", file=sys.stderr)
        return 1
