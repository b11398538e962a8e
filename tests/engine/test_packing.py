"""The hiredis command packer sends exactly the bytes redis-py's own packer does."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from kai_inventory.engine.connection import HiredisPackConnection, use_hiredis_packing


@pytest.mark.parametrize(
    "args",
    [
        ("FCALL", "hold_seats_abc", 2, "k:{s:1}:meta", b"\x00\xff", -3, 1.5, 10**20, "é"),
        ("FUNCTION LOAD", "REPLACE", "#!lua name=x\nreturn 1"),
        (b"SET", "a b", 0.1),
        ("GET", b"x" * 70_000),
    ],
)
def test_hiredis_packing_gives_redis_py_bytes(args: tuple[object, ...]) -> None:
    ours = b"".join(HiredisPackConnection().pack_command(*args))
    theirs = b"".join(Connection().pack_command(*args))
    assert ours == theirs


@pytest.mark.parametrize("bad", [None, True, [1]])
def test_hiredis_packing_refuses_what_redis_py_refuses(bad: object) -> None:
    with pytest.raises(DataError):
        HiredisPackConnection().pack_command("SET", "k", bad)


async def test_plain_clients_switch_to_hiredis_packing_and_still_work(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        assert use_hiredis_packing(client)
        assert client.connection_pool.connection_class is HiredisPackConnection
        assert await client.echo("é\x00x") == "é\x00x".encode()
    finally:
        await client.aclose()
    latin = aioredis.from_url(redis_url, encoding="latin-1")
    try:
        assert not use_hiredis_packing(latin)  # hiredis encodes str as UTF-8 only
    finally:
        await latin.aclose()
