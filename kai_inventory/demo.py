"""``kai-inventory demo``: the embedded default, one command from nothing to a running service.

Uses REDIS_URL / DATABASE_URL when they are set; otherwise starts a private Redis and Postgres
from the system's binaries under a state folder (``KAI_STATE_DIR``, default ``./var/demo``),
so the demo never touches a developer's own servers. Then migrates, seeds the demo network,
and serves with demo mode on (the seat-map page can fetch a token for a demo user).
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path

from kai_inventory.localstack import PostgresServer, RedisServer, free_port
from kai_inventory.settings import Settings


def demo_command(settings: Settings, args: argparse.Namespace) -> int:
    from kai_inventory.demo_data import seed_demo_command
    from kai_inventory.persist.migrate import migrate_command
    from kai_inventory.server import serve_command

    state = Path(args.state_dir or os.environ.get("KAI_STATE_DIR", "var/demo")).resolve()
    with ExitStack() as stack:
        if "REDIS_URL" not in os.environ:
            redis = RedisServer(free_port(), state / "redis", appendonly=True).start()
            stack.callback(redis.stop)
            settings = settings.replace(redis_url=redis.url)
            print(f"demo: private Redis on {redis.url} (state in {redis.directory})")
        if "DATABASE_URL" not in os.environ:
            postgres = PostgresServer(free_port(), state / "postgres").start()
            stack.callback(postgres.stop)
            postgres.create_database("kai")
            settings = settings.replace(database_url=postgres.url("kai"))
            print(
                f"demo: private Postgres on {postgres.url('kai')} (state in {postgres.directory})"
            )
        settings = settings.replace(demo=True)
        if migrate_command(settings, argparse.Namespace(action="up", to=None)) != 0:
            return 1
        if seed_demo_command(settings, argparse.Namespace()) != 0:
            return 1
        print(f"demo: open http://127.0.0.1:{args.port}/ for the live seat map", flush=True)
        serve_args = argparse.Namespace(host="127.0.0.1", port=args.port, workers=1)
        try:
            code: int = serve_command(settings, serve_args)
            return code
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    from kai_inventory.settings import load_settings

    sys.exit(demo_command(load_settings(), argparse.Namespace(port=8080, state_dir=None)))
