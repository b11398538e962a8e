"""F9: 1,000 WebSocket subscribers, 10% of which never read, under a workload."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from tests.faults.conftest import LONG, Stack, record_summary
from tests.faults.invariants import check_watchers
from tests.faults.workload import WsWatcher, silent_subscriber

SUBSCRIBERS = 1000
SILENT = SUBSCRIBERS // 10


async def test_f9_thousand_subscribers_a_tenth_never_reading(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(env={"KAI_WS_COALESCE_MS": "100"})
    assert stack.service is not None
    url = stack.service.url
    watcher = WsWatcher(url, stack.specs, count=SUBSCRIBERS - SILENT, spread=True)
    stop = asyncio.Event()
    readers = asyncio.create_task(watcher.run(stop))
    silent = [
        await silent_subscriber("127.0.0.1", stack.service.port, stack.specs[i % 3].schedule_id)
        for i in range(SILENT)
    ]
    try:
        deadline = time.monotonic() + 30
        while len(watcher.live_subs()) < SUBSCRIBERS - SILENT and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert len(watcher.live_subs()) == SUBSCRIBERS - SILENT
        w = stack.workload(seed=9)
        w.tasks = 16 if LONG else 8
        await w.run(30.0 if LONG else 6.0)
        result = await stack.check([w])
        result["agree_s"] = result.pop("recover_s")
        # every reader saw versions only grow and converged on what HTTP answers, although
        # a tenth of the subscribers never read a byte
        result.update(await check_watchers(watcher, url, timeout_s=20.0))
        assert w.summary()["client_errors"] == 0, w.summary()
        assert w.summary()["max_latency_s"] < 5.0, w.summary()  # no request stalls
        result["recover_s"] = 0.0
        record_summary(
            "F9 1,000 WebSocket subscribers, 10% never read", [w], result,
            subscribers=SUBSCRIBERS, silent=SILENT, frames=len(watcher.frames),
        )  # fmt: skip
    finally:
        stop.set()
        for sock in silent:
            with contextlib.suppress(OSError):
                sock.close()
        await readers
