"""``kai-inventory serve``: N worker processes on one port (SO_REUSEPORT), graceful shutdown.

Each worker runs its own uvloop event loop with an aiohttp ``AppRunner`` and a
``TCPSite(reuse_port=True)``; the kernel spreads connections over them. On SIGTERM/SIGINT a
worker stops accepting, closes WebSockets with 1001, lets in-flight requests finish within
``KAI_DRAIN_S`` and closes its connections. The parent forwards the signal to every worker
and waits for them; if one worker dies on its own, the others are stopped too (the process
manager restarts the whole unit).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import time
from types import FrameType

import uvloop
from aiohttp import web

from kai_inventory.logs import configure
from kai_inventory.settings import Settings

log = logging.getLogger("kai_inventory.server")

KILL_GRACE_S = 5.0


async def serve(settings: Settings, host: str, port: int, worker: int = 0) -> None:
    from kai_inventory.app import create_app

    app = create_app(settings)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=float(settings.drain_s)
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if _early_stop:
        stop.set()  # a signal came while the worker was still starting
    try:
        site = web.TCPSite(runner, host, port, reuse_port=True, backlog=2048)
        await site.start()
        settle_garbage_collector()
        log.info(
            "listening", extra={"host": host, "port": port, "worker": worker, "pid": os.getpid()}
        )
        await stop.wait()
        log.info("draining", extra={"worker": worker, "drain_s": settings.drain_s})
    finally:
        await runner.cleanup()
        log.info("stopped", extra={"worker": worker})


# Objects that live as long as the worker (modules, the app, its routes) are moved out of the
# cyclic collector's view once started (gc.freeze), and the youngest generation is collected
# every GC_GEN0 allocations instead of 700: a request allocates hundreds of short-lived objects
# (almost none in cycles: reference counting frees them), so the default made a collection every
# few requests and a full one, walking every object of the process, every few hundred.
GC_GEN0 = 20_000


def settle_garbage_collector() -> None:
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0, gen1, gen2)


_early_stop: list[int] = []


def _note_early_signal(signum: int, frame: FrameType | None) -> None:
    _early_stop.append(signum)


def run_worker(settings: Settings, host: str, port: int, worker: int = 0) -> int:
    # Until the event loop takes over, a stop signal is remembered rather than fatal.
    signal.signal(signal.SIGTERM, _note_early_signal)
    signal.signal(signal.SIGINT, _note_early_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    configure(settings.log_level)
    try:
        uvloop.run(serve(settings, host, port, worker))
    except KeyboardInterrupt:
        pass
    except Exception:
        log.exception("worker %d failed", worker)
        return 1
    return 0


def _worker_main(settings: Settings, host: str, port: int, worker: int) -> None:
    raise SystemExit(run_worker(settings, host, port, worker))


def serve_command(settings: Settings, args: argparse.Namespace) -> int:
    """``kai-inventory serve [--host H] [--port P] [--workers N]``."""
    configure(settings.log_level)
    workers = max(1, int(args.workers))
    host: str = args.host
    port: int = args.port
    if workers == 1:
        return run_worker(settings, host, port)
    if port == 0:
        log.error("--workers > 1 needs a fixed --port (workers share it with SO_REUSEPORT)")
        return 2
    # fork (prefork, as gunicorn does): the parent holds no event loop, thread or connection,
    # and a forked child inherits the blocked signal mask (a spawned one would not).
    fork = multiprocessing.get_context("fork")
    procs = [
        fork.Process(target=_worker_main, args=(settings, host, port, i), name=f"kai-worker-{i}")
        for i in range(workers)
    ]
    stopping_since: list[float] = []

    def stop_all(signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        if not stopping_since:
            stopping_since.append(time.monotonic())
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    # Workers start with the stop signals blocked (fork keeps the mask), so a signal that
    # arrives while one is still starting waits until its own handlers are in place.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        for proc in procs:
            proc.start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
    log.info("started workers", extra={"workers": workers, "port": port})
    while any(proc.is_alive() for proc in procs):
        for proc in procs:
            proc.join(0.1)
        if not stopping_since and any(proc.exitcode is not None for proc in procs):
            log.error("a worker exited on its own; stopping the others")
            stop_all()
        if (
            stopping_since
            and time.monotonic() - stopping_since[0] > settings.drain_s + KILL_GRACE_S
        ):
            for proc in procs:
                if proc.is_alive():
                    proc.kill()
    codes = [proc.exitcode for proc in procs if proc.pid is not None]
    if any(code != 0 for code in codes):
        log.error("workers exited with %s", codes)
    return 0 if all(code == 0 for code in codes) else 1
