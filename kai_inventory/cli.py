"""The ``kai-inventory`` console script: parses arguments and hands off to the owning module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from kai_inventory.settings import Settings, SettingsError, load_settings

# command -> "module:function"; each function takes (settings, args) and returns an exit code.
COMMANDS: dict[str, str] = {
    "serve": "kai_inventory.server:serve_command",
    "migrate": "kai_inventory.persist.migrate:migrate_command",
    "seed-demo": "kai_inventory.demo_data:seed_demo_command",
    "rebuild": "kai_inventory.sales:rebuild_command",
    "verify": "kai_inventory.sales:verify_command",
    "token": "kai_inventory.api.auth:token_command",  # nosec B105 (a module path)
    "demo": "kai_inventory.demo:demo_command",
    "backup": "kai_inventory.persist.backup:backup_command",
    "restore": "kai_inventory.persist.backup:restore_command",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kai-inventory", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP + WebSocket server")
    serve.add_argument("--host", default="0.0.0.0")  # noqa: S104  # nosec B104 (a server)
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1)

    migrate = sub.add_parser("migrate", help="apply or revert SQL migrations")
    migrate_sub = migrate.add_subparsers(dest="action", required=True)
    migrate_sub.add_parser("up", help="apply every pending migration")
    down = migrate_sub.add_parser("down", help="revert migrations")
    down.add_argument("--to", type=int, default=None, help="revert down to this version (0: all)")
    migrate_sub.add_parser("status", help="list migrations and whether each is applied")

    sub.add_parser("seed-demo", help="load the demo network: real KAI stations and trains")

    rebuild = sub.add_parser("rebuild", help="rebuild Redis inventory from Postgres")
    rebuild.add_argument("--schedule", default=None)

    verify = sub.add_parser("verify", help="compare Redis inventory with Postgres sales")
    verify.add_argument("--repair", action="store_true")

    token = sub.add_parser("token", help="print a signed bearer token")
    token.add_argument("--sub", required=True)
    token.add_argument("--scope", required=True)
    token.add_argument("--ttl", type=int, default=3600)

    demo = sub.add_parser("demo", help="run everything on private Redis/Postgres, print the URL")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--state-dir", default=None)

    backup = sub.add_parser("backup", help="pg_dump the database to a file")
    backup.add_argument("file")
    restore = sub.add_parser("restore", help="pg_restore the database from a file")
    restore.add_argument("file")
    return parser


def _resolve(target: str) -> Callable[[Settings, argparse.Namespace], int]:
    module, _, name = target.partition(":")
    function: Callable[[Settings, argparse.Namespace], int] = getattr(
        importlib.import_module(module), name
    )
    return function


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"kai-inventory: configuration error: {exc}", file=sys.stderr)
        return 2
    return _resolve(COMMANDS[args.command])(settings, args)


if __name__ == "__main__":
    sys.exit(main())
