"""Where the shipped Lua scripts and SQL migrations live.

In a built wheel they sit inside the package (``kai_inventory/lua``); in a source checkout they
are the top-level ``lua/`` and ``migrations/`` folders.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"{name}/ not found beside or inside the kai_inventory package")


def lua_dir() -> Path:
    return resource_dir("lua")


def migrations_dir() -> Path:
    return resource_dir("migrations")
