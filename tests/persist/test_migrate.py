"""Migrations on a real Postgres: up, down to nothing, up again; checksums; concurrent runners."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from kai_inventory.persist.migrate import (
    MigrationError,
    load_migrations,
    migrate_down,
    migrate_up,
    migrations_dir,
    parse_migration,
    pending,
    status,
)

ALL = load_migrations()
ERD_TABLES = {
    "users", "user_profiles", "trains", "train_classes", "stations", "routes", "route_stations",
    "schedules", "seats", "bookings", "passengers", "payments", "refunds", "tickets",
    "promotions", "booking_promotions", "user_sessions", "audit_logs", "notifications",
}  # fmt: skip


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def _types(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
        " WHERE n.nspname = 'public' AND t.typtype = 'e'"
    )
    return {r["typname"] for r in rows}


async def test_up_creates_every_erd_table_down_removes_everything_and_up_again_works(private_db):
    conn = await asyncpg.connect(await private_db(migrated=False))
    try:
        assert [m.version for m in await pending(conn)] == [m.version for m in ALL]
        applied = await migrate_up(conn)
        assert [m.version for m in applied] == [m.version for m in ALL]
        assert ERD_TABLES | {"schedule_stops", "schema_migrations"} <= await _tables(conn)
        assert await pending(conn) == []

        reverted = await migrate_down(conn, to=0)
        assert [m.version for m in reverted] == [m.version for m in reversed(ALL)]
        assert await _tables(conn) == {"schema_migrations"}
        assert await _types(conn) == set()
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0

        again = await migrate_up(conn)
        assert len(again) == len(ALL)
        assert await _tables(conn) >= ERD_TABLES
    finally:
        await conn.close()


async def test_down_without_target_reverts_only_the_latest_and_to_keeps_lower_versions(private_db):
    conn = await asyncpg.connect(await private_db())
    try:
        latest = ALL[-1]
        assert [m.version for m in await migrate_down(conn)] == [latest.version]
        assert [m.version for m in await pending(conn)] == [latest.version]
        await migrate_down(conn, to=ALL[0].version)
        states = await status(conn)
        assert [s.version for s in states if s.applied] == [ALL[0].version]
        await migrate_up(conn, to=ALL[1].version)
        assert [m.version for m in await pending(conn)] == [m.version for m in ALL[2:]]
    finally:
        await conn.close()


async def test_a_migration_edited_after_it_was_applied_is_refused(private_db, tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), folder)
    conn = await asyncpg.connect(await private_db(migrated=False))
    try:
        await migrate_up(conn, folder)
        edited = folder / ALL[0].filename
        edited.write_text(edited.read_text() + "\n-- an innocent-looking edit\n")
        with pytest.raises(MigrationError, match=ALL[0].filename):
            await migrate_up(conn, folder)
        with pytest.raises(MigrationError, match="edited after it was applied"):
            await migrate_down(conn, to=0, directory=folder)
        states = await status(conn, folder)
        assert [s.checksum_ok for s in states] == [False] + [True] * (len(ALL) - 1)
    finally:
        await conn.close()


async def test_two_runners_at_once_apply_each_migration_once(private_db):
    dsn = await private_db(migrated=False)
    first, second = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        applied = await asyncio.gather(migrate_up(first), migrate_up(second))
        assert sorted(len(a) for a in applied) == [0, len(ALL)]
        rows = await first.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [m.version for m in ALL]
    finally:
        await first.close()
        await second.close()


def test_two_cli_processes_started_together_apply_each_migration_once(private_db):
    dsn = asyncio.run(private_db(migrated=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAI_")} | {"DATABASE_URL": dsn}
    cmd = [sys.executable, "-m", "kai_inventory.cli", "migrate", "up"]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    applied = [
        line for out, _ in outputs for line in out.splitlines() if line.startswith("applied")
    ]
    assert sorted(applied) == sorted(f"applied  {m.filename}" for m in ALL)
    status_run = subprocess.run(
        [sys.executable, "-m", "kai_inventory.cli", "migrate", "status"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert status_run.returncode == 0
    assert status_run.stdout.count("applied") == len(ALL)


def test_a_file_without_a_down_section_is_rejected(tmp_path: Path):
    bad = tmp_path / "0009_no_down.sql"
    bad.write_text("-- migrate:up\nCREATE TABLE x (id int);\n")
    with pytest.raises(MigrationError, match="migrate:down"):
        parse_migration(bad)
    misnamed = tmp_path / "9_bad.sql"
    misnamed.write_text("-- migrate:up\nSELECT 1;\n-- migrate:down\n")
    with pytest.raises(MigrationError, match="NNNN_name"):
        parse_migration(misnamed)


def test_every_shipped_migration_has_up_and_down_sections():
    for m in ALL:
        assert m.up.strip(), m.filename
        assert m.down.strip(), m.filename
        assert m.up_transaction
        assert m.down_transaction
