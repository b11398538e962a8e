"""``kai-inventory backup FILE`` / ``restore FILE``: pg_dump -Fc and pg_restore --clean.

The client tools must not be older than the server; when the ones on PATH are, the matching
``/usr/lib/postgresql/<major>/bin`` copy is used. Restore creates the database first when it
does not exist (after a drop, or on a fresh host) and runs in one transaction. After a restore,
run ``kai-inventory rebuild`` so Redis matches the restored sales.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil

# pg_dump/pg_restore run with argument lists (no shell) from a fixed binary path.
import subprocess  # nosec B404
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from kai_inventory.settings import Settings


class BackupError(RuntimeError):
    pass


def _major(version_text: str) -> int | None:
    match = re.search(r"(\d+)(?:\.\d+)?", version_text)
    return int(match.group(1)) if match else None


def find_tool(name: str, server_major: int | None) -> str:
    """The pg_dump/pg_restore binary to use against a server of ``server_major``."""
    candidates: list[str] = []
    if server_major is not None:
        versioned = Path(f"/usr/lib/postgresql/{server_major}/bin/{name}")
        if versioned.exists():
            candidates.append(str(versioned))
    on_path = shutil.which(name)
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        out = subprocess.run(  # nosec B603
            [candidate, "--version"], capture_output=True, text=True, check=False, timeout=30
        )
        major = _major(out.stdout.partition("PostgreSQL)")[2] or out.stdout)
        if server_major is None or (major is not None and major >= server_major):
            return candidate
    raise BackupError(f"no {name} of version >= {server_major} found (install postgresql-client)")


def _database_name(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/") or "postgres"


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def _server_major(dsn: str) -> int | None:
    for target in (dsn, _with_database(dsn, "postgres")):
        try:
            conn = await asyncpg.connect(target, timeout=5)
        except (OSError, asyncpg.PostgresError):
            continue
        try:
            num = int(await conn.fetchval("SELECT current_setting('server_version_num')"))
            return num // 10000
        finally:
            await conn.close()
    return None


async def _ensure_database(dsn: str) -> bool:
    """Create the DSN's database if missing; True when it was created."""
    name = _database_name(dsn)
    conn = await asyncpg.connect(_with_database(dsn, "postgres"), timeout=5)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        await conn.execute(f"CREATE DATABASE {quoted}")
        return True
    finally:
        await conn.close()


def backup(dsn: str, file: str) -> None:
    tool = find_tool("pg_dump", asyncio.run(_server_major(dsn)))
    done = subprocess.run(  # nosec B603
        [tool, "--format=custom", "--no-owner", "--file", file, "--dbname", dsn],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    if done.returncode != 0:
        raise BackupError(f"pg_dump failed: {done.stderr.strip()}")


def restore(dsn: str, file: str) -> None:
    if not Path(file).is_file():
        raise BackupError(f"{file}: no such backup file")
    asyncio.run(_ensure_database(dsn))
    tool = find_tool("pg_restore", asyncio.run(_server_major(dsn)))
    done = subprocess.run(  # nosec B603
        [tool, "--clean", "--if-exists", "--no-owner", "--single-transaction",
         "--exit-on-error", "--dbname", dsn, file],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )  # fmt: skip
    if done.returncode != 0:
        raise BackupError(f"pg_restore failed: {done.stderr.strip()}")


def backup_command(settings: Settings, args: argparse.Namespace) -> int:
    """``kai-inventory backup FILE``."""
    try:
        backup(settings.database_url, args.file)
    except (BackupError, OSError, asyncpg.PostgresError) as exc:
        print(f"kai-inventory backup: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {_database_name(settings.database_url)} to {args.file}")
    return 0


def restore_command(settings: Settings, args: argparse.Namespace) -> int:
    """``kai-inventory restore FILE`` (then run ``kai-inventory rebuild``)."""
    try:
        restore(settings.database_url, args.file)
    except (BackupError, OSError, asyncpg.PostgresError) as exc:
        print(f"kai-inventory restore: {exc}", file=sys.stderr)
        return 1
    print(f"restored {_database_name(settings.database_url)} from {args.file}; "
          "now run `kai-inventory rebuild`")  # fmt: skip
    return 0
