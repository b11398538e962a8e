"""Redis Cluster: every script touches one slot, the user-side rules hold across shards, events
go through sharded pub/sub, the reaper and the loss markers work per shard, and a resharding
or a lost shard is ridden out (retried), never raised to the caller."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from model import small_layout
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from kai_inventory.engine.codes import Code
from kai_inventory.engine.connection import client_for_url
from kai_inventory.engine.inventory import RESERVATION_MS, HoldRequest, Inventory
from kai_inventory.engine.keys import Keys

TTL = 600_000


@pytest.fixture
async def cluster_inv(redis_cluster: Any, key_prefix: str) -> AsyncIterator[Inventory]:
    client: Any = client_for_url(redis_cluster.url)
    inv = Inventory(client, Keys(key_prefix), test_clock=True)
    await inv.load_scripts()
    yield inv
    await client.aclose()


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


def _on_distinct_masters(inv: Inventory, count: int, prefix: str = "CL") -> list[str]:
    """Schedule ids whose slots are served by ``count`` different masters."""
    cluster: Any = inv.redis
    found: dict[str, str] = {}
    for i in range(1000):
        sid = f"{prefix}{i}"
        node = cluster.get_node_from_key(inv.keys.schedule(sid).meta).name
        found.setdefault(node, sid)
        if len(found) == count:
            return list(found.values())
    raise AssertionError("schedules do not spread over the masters")


async def test_every_script_call_touches_a_single_slot(cluster_inv: Inventory) -> None:
    inv = cluster_inv
    assert inv.cluster
    assert isinstance(inv.redis, RedisCluster)
    slots_per_call: list[tuple[str, set[int]]] = []
    original = inv.scripts.call

    async def spy(name: str, keys: list[str], args: list[Any]) -> Any:
        slots_per_call.append((name, {_slot(k) for k in keys}))
        return await original(name, keys, args)

    inv.scripts.call = spy
    await inv.open(small_layout("ONE"))
    out = await inv.hold(
        HoldRequest(
            "ONE",
            "ann",
            0,
            2,
            TTL,
            seats=[0],
            max_active=3,
            rate_per_min=10,
            idempotency_key="k1",
            body_hash="h1",
        )
    )
    assert out.hold is not None
    cls = await inv.hold(HoldRequest("ONE", "ann", 0, 2, TTL, seat_class="economy", count=2))
    assert cls.hold is not None
    hid = out.hold.hold_id
    assert (await inv.confirm_begin(hid, "ann"))[0] == Code.OK
    assert await inv.confirm_abort(hid) == Code.OK
    assert (await inv.confirm_begin(hid, "ann"))[0] == Code.OK
    assert await inv.confirm(hid, "B1") == Code.OK
    assert (await inv.release(cls.hold.hold_id, "ann"))[0] == Code.OK
    assert await inv.cancel("ONE", 0, 2, [0]) == Code.OK
    assert await inv.restore("ONE", [(0, 1, [1])]) == Code.OK
    await inv.reap("ONE")
    assert await inv.snapshot("ONE") is not None
    assert await inv.set_status("ONE", "delayed", 5, "signal") == Code.OK
    names = {name for name, _ in slots_per_call}
    assert {"hold_seats", "hold_class", "user_reserve", "user_finalize", "open"} <= names
    for name, slots in slots_per_call:
        assert len(slots) == 1, (name, slots)


async def test_live_hold_limit_counts_holds_on_every_shard(cluster_inv: Inventory) -> None:
    inv = cluster_inv
    s1, s2, s3 = _on_distinct_masters(inv, 3, "LIM")
    for sid in (s1, s2, s3):
        await inv.open(small_layout(sid))

    def req(sid: str, seat: int) -> HoldRequest:
        return HoldRequest(sid, "bob", 0, 1, TTL, seats=[seat], max_active=2)

    first = await inv.hold(req(s1, 0))
    second = await inv.hold(req(s2, 0))
    assert first.hold
    assert second.hold
    assert (await inv.hold(req(s3, 0))).code == Code.HOLD_LIMIT
    # a hold that ended on its shard frees its place in the user's slot
    assert (await inv.release(first.hold.hold_id, "bob"))[0] == Code.OK
    third = await inv.hold(req(s3, 0))
    assert third.code == Code.OK
    assert (await inv.hold(req(s1, 1))).code == Code.HOLD_LIMIT


async def test_a_reservation_without_its_finalize_ends_by_itself(cluster_inv: Inventory) -> None:
    """A process that dies between user_reserve and the schedule's script leaks no place."""
    inv = cluster_inv
    await inv.open(small_layout("RSV"))
    uk = inv.keys.user("cat")
    reply = await inv.scripts.call(
        "user_reserve",
        [uk.holds, uk.rate, uk.idempotency("")],
        [0, "RSV.crashed", "0", "", 0, 1, RESERVATION_MS],
    )
    assert reply[0] == Code.OK
    assert reply[2] == 0
    blocked = await inv.hold(HoldRequest("RSV", "cat", 0, 1, TTL, seats=[0], max_active=1))
    assert blocked.code == Code.HOLD_LIMIT
    await inv.advance_clock("RSV", RESERVATION_MS + 1_000)
    assert (await inv.hold(HoldRequest("RSV", "cat", 0, 1, TTL, seats=[0], max_active=1))).hold


async def test_rate_limit_and_idempotency_across_shards(cluster_inv: Inventory) -> None:
    inv = cluster_inv
    s1, s2 = _on_distinct_masters(inv, 2, "IDM")
    for sid in (s1, s2):
        await inv.open(small_layout(sid))

    def req(sid: str, key: str, body: str, seat: int = 0) -> HoldRequest:
        return HoldRequest(
            sid,
            "dan",
            0,
            1,
            TTL,
            seats=[seat],
            idempotency_key=key,
            body_hash=body,
            rate_per_min=3,
        )

    made = await inv.hold(req(s1, "key-1", "body-a"))
    assert made.hold is not None
    assert not made.replayed
    again = await inv.hold(req(s1, "key-1", "body-a"))
    assert again.replayed
    assert again.hold is not None
    assert again.hold.hold_id == made.hold.hold_id
    # the same key with another body, on another shard: the user's pointer catches it
    assert (await inv.hold(req(s2, "key-1", "body-b"))).code == Code.IDEMPOTENCY_CONFLICT
    # the record in the schedule's slot was written by the hold script itself
    record = await inv.redis.get(inv.keys.schedule(s1).idempotency("dan", "key-1"))
    assert record == b"body-a\n" + made.hold.hold_id.encode()
    # a failed hold leaves no pointer: the key can be used again
    taken = await inv.hold(req(s1, "key-2", "body-c", seat=0))
    assert taken.code == Code.SEATS_UNAVAILABLE
    assert (await inv.hold(req(s1, "key-2", "body-d", seat=1))).code == Code.OK
    limited = await inv.hold(req(s2, "key-3", "body-e", seat=2))
    assert limited.code == Code.RATE_LIMITED
    assert limited.retry_after_ms > 0


async def test_events_are_published_on_the_schedules_shard(
    cluster_inv: Inventory, redis_cluster: Any
) -> None:
    inv = cluster_inv
    await inv.open(small_layout("EVT"))
    channel = inv.keys.schedule("EVT").channel
    cluster: Any = inv.redis
    node = cluster.get_node_from_key(channel)
    import redis.asyncio as aioredis

    sub = aioredis.Redis(host=node.host, port=node.port)
    pubsub = sub.pubsub()
    await pubsub.ssubscribe(channel)
    got = await pubsub.get_message(timeout=2)
    assert got is not None
    assert got["type"] == "ssubscribe"
    out = await inv.hold(HoldRequest("EVT", "eve", 0, 2, TTL, seats=[3]))
    assert out.hold is not None
    message = None
    for _ in range(20):
        message = await pubsub.get_message(timeout=0.5)
        if message is not None:
            break
    assert message is not None
    assert message["type"] == "smessage"
    assert b'"ch":[[0,2,[3]]]' in message["data"]
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await sub.aclose()


async def test_background_reaper_frees_expired_holds_on_every_shard(
    cluster_inv: Inventory,
) -> None:
    inv = cluster_inv
    ids = _on_distinct_masters(inv, 3, "RPR")
    holds = []
    for sid in ids:
        await inv.open(small_layout(sid))
        out = await inv.hold(HoldRequest(sid, "fay", 0, 1, 300, seats=[0]))
        assert out.hold is not None
        holds.append(out.hold)
    assert await inv.live_holds() >= 3
    await asyncio.sleep(0.45)
    assert await inv.reap_due() == 3
    for hold in holds:
        got = await inv.get_hold(hold.hold_id)
        assert got is not None
        assert got.status == "expired"
    # the due index is empty again for these schedules
    assert await inv.reap_due() == 0
    assert await inv.sweep_due() == 0


async def test_reap_and_sweep_keep_the_due_score_of_a_schedule_with_live_holds(
    cluster_inv: Inventory,
) -> None:
    # the cluster client answers ZRANGE ... WITHSCORES as [[member, score]], not flat
    inv = cluster_inv
    await inv.open(small_layout("LIVE"))
    assert (await inv.hold(HoldRequest("LIVE", "gus", 0, 1, 300, seats=[0]))).hold is not None
    kept = (await inv.hold(HoldRequest("LIVE", "gus", 0, 1, TTL, seats=[1]))).hold
    assert kept is not None
    await asyncio.sleep(0.45)
    assert await inv.reap_due() == 1
    due = inv._due_key("LIVE")
    assert int(await inv.redis.zscore(due, "LIVE")) == kept.expires_ms
    await inv.redis.zrem(due, "LIVE")  # a process died before its due update
    assert await inv.sweep_due() == 1
    assert int(await inv.redis.zscore(due, "LIVE")) == kept.expires_ms


async def test_lost_shard_is_detected_by_its_own_marker_only(
    cluster_inv: Inventory, redis_cluster: Any
) -> None:
    inv = cluster_inv
    markers = inv.epoch_markers()
    assert len(markers) == 3
    await inv.set_epoch()
    assert await inv.missing_epochs() == []
    ids = _on_distinct_masters(inv, 3, "LOST")
    for sid in ids:
        await inv.open(small_layout(sid))
    cluster: Any = inv.redis
    victim = cluster.get_node_from_key(inv.keys.schedule(ids[0]).meta)

    redis_cluster.restart_empty(victim.port)  # the shard is back, empty
    missing = await inv.missing_epochs()
    assert len(missing) == 1
    assert cluster.get_node_from_key(missing[0]).name == victim.name
    lost = inv.on_markers_shards(missing)
    assert [sid for sid in ids if lost(sid)] == [ids[0]]
    # the emptied shard lost its scripts too: NOSCRIPT is recovered, no error reaches us
    assert await inv.snapshot(ids[0]) is None
    assert await inv.snapshot(ids[1]) is not None
    await inv.open(small_layout(ids[0]))
    assert (await inv.hold(HoldRequest(ids[0], "gus", 0, 1, TTL, seats=[0]))).code == Code.OK
    await inv.set_epoch(missing)
    assert await inv.missing_epochs() == []


async def test_a_call_during_a_shard_outage_is_retried_not_raised(
    cluster_inv: Inventory, redis_cluster: Any
) -> None:
    inv = cluster_inv
    (sid,) = _on_distinct_masters(inv, 1, "OUT")
    await inv.open(small_layout(sid))
    cluster: Any = inv.redis
    port = cluster.get_node_from_key(inv.keys.schedule(sid).meta).port
    node = redis_cluster.node_of_port(port)
    node.stop()

    def restart() -> None:
        time.sleep(1.0)
        node.start()

    thread = threading.Thread(target=restart)
    thread.start()
    try:
        # issued while the shard is down: answered once it is back (empty: not found)
        out = await inv.hold(HoldRequest(sid, "hal", 0, 1, TTL, seats=[0]))
    finally:
        thread.join()
        redis_cluster.wait_ok()
    assert out.code == Code.SCHEDULE_NOT_FOUND
    assert inv.pipeline.retries > 0


async def test_resharding_a_schedules_slot_is_invisible_to_callers(
    cluster_inv: Inventory, redis_cluster: Any
) -> None:
    inv = cluster_inv
    (sid,) = _on_distinct_masters(inv, 1, "MOV")
    await inv.open(small_layout(sid))
    first = await inv.hold(HoldRequest(sid, "ivy", 0, 2, TTL, seats=[0]))
    assert first.hold is not None
    meta = inv.keys.schedule(sid).meta
    slot = _slot(meta)
    here = redis_cluster.owner_of_slot(slot)
    there = next(p for p in redis_cluster.ports if p != here)
    await asyncio.to_thread(redis_cluster.move_slot, slot, there)
    # the client's slot map is stale: MOVED is followed, the data came along
    again = await inv.hold(HoldRequest(sid, "ivy", 0, 2, TTL, seats=[0]))
    assert again.code == Code.SEATS_UNAVAILABLE
    assert (await inv.release(first.hold.hold_id, "ivy"))[0] == Code.OK
    assert (await inv.hold(HoldRequest(sid, "ivy", 0, 2, TTL, seats=[0]))).code == Code.OK
    assert redis_cluster.owner_of_slot(slot) == there
