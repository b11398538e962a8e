"""The per-connection queue: overflow drops updates and asks for a resync; slow clients found."""

from __future__ import annotations

import time

from kai_inventory import metrics
from kai_inventory.ws.client import Client
from kai_inventory.ws.hub import Hub, Subscription


def _client(resyncs: list[list[Subscription]], limit: int = 4) -> Client:
    # the writer is never started: the queue only fills, as with a client that stopped reading
    return Client(ws=None, conn_id=1, on_resync=resyncs.append, queue_limit=limit)  # type: ignore[arg-type]


def test_overflow_drops_queued_updates_keeps_control_frames_and_marks_a_resync() -> None:
    resyncs: list[list[Subscription]] = []
    client = _client(resyncs)
    a = Subscription(client, "s1", "S", "GMR", "YK", 0, 2, True)
    b = Subscription(client, "s2", "S", "GMR", "CN", 0, 1, False)
    client.send(b'{"type":"snapshot"}', "snapshot")
    client.push_update(a, b"u1", 0.0)
    client.push_update(b, b"u2", 0.0)
    client.push_update(a, b"u3", 0.0)
    assert client.queued == 4
    before = metrics.WS_DROPPED._value.get()
    client.push_update(a, b"u4", 0.0)  # over the limit
    assert client.queued == 1  # only the snapshot is left
    assert metrics.WS_DROPPED._value.get() - before == 4
    assert a.resync
    assert b.resync
    assert client.backlogged


def test_a_client_with_queued_frames_and_no_progress_past_the_deadline_is_slow() -> None:
    hub = Hub(slow_deadline_s=5.0)
    idle = _client([])
    stuck = _client([])
    stuck.conn_id = 2
    hub.add_client(idle)
    hub.add_client(stuck)
    stuck.send(b"x")
    now = time.monotonic()
    assert hub.slow_clients(now) == []
    assert hub.slow_clients(now + 6.0) == [stuck]
    hub.remove_client(idle)
    hub.remove_client(stuck)
