"""Script contract: every lua/*.lua is registered and loaded (the engine's as functions of one
Redis Functions library), its header's key count matches what Inventory passes, codes agree
with Python, and a Redis that lost its functions and scripts (a restart) recovers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from kai_inventory import localstack
from kai_inventory.engine import scripts as scripts_mod
from kai_inventory.engine.codes import Code, code_of
from kai_inventory.engine.inventory import HoldRequest, Inventory
from kai_inventory.engine.keys import Keys
from kai_inventory.resources import lua_dir

LUA = lua_dir()
ENGINE_SCRIPTS = {
    "open", "hold_seats", "hold_class", "confirm_begin", "confirm_abort", "confirm",
    "release", "cancel", "restore", "reap", "snapshot", "status",
}  # fmt: skip
KEYLESS = {"expired_total"}  # Inventory.expired_total: FCALL_RO name 0 prefix, every server


def test_every_lua_file_is_registered_with_a_header() -> None:
    registry, library = scripts_mod.build()
    files = {p.stem for p in LUA.glob("*.lua")}
    assert files == set(registry)
    assert files >= ENGINE_SCRIPTS
    for script in registry.values():
        if script.name not in KEYLESS:
            assert script.num_keys >= 1
            assert script.num_args >= 1
        assert "@include" not in script.source
        assert re.search(r"^-- Returns", script.source, re.MULTILINE), script.name
        header_keys = re.findall(r"^-- KEYS\[(\d+)\]", script.source, re.MULTILINE)
        assert script.num_keys == len(header_keys), script.name
        assert script.command[2] == script.num_keys
    functions = {name for name, script in registry.items() if script.function}
    assert functions >= ENGINE_SCRIPTS | {"user_reserve", "user_finalize"}
    assert set(library.functions) == {registry[name].function for name in functions}
    for name in KEYLESS:  # read on every server: no keys, the key prefix, read-only
        assert registry[name].command == ("FCALL_RO", registry[name].function, 0)
        assert registry[name].num_args == 1
    for name in functions:  # each function's body is in the library once, its libs once
        assert library.source.count(f"-- {name}.lua\n") == 1
    assert library.source.count("local function bits_write(") == 1
    assert library.source.startswith(f"#!lua name={library.name}\n")


def test_library_names_follow_its_source_and_mode(tmp_path: Path) -> None:
    single, lib = scripts_mod.build()
    cluster, lib_cluster = scripts_mod.build(cluster=True)
    assert lib.name != lib_cluster.name
    assert single["hold_seats"].function != cluster["hold_seats"].function
    (tmp_path / "lib").mkdir()
    head = "-- KEYS[1] k\n-- ARGV[1] a\n"
    (tmp_path / "x.lua").write_text("-- @function no-writes\n" + head + "return 1\n")
    x, lib_x = scripts_mod.build(tmp_path)
    assert x["x"].read_only
    assert x["x"].command[0] == "FCALL_RO"
    assert "flags = {'no-writes'}" in lib_x.source
    (tmp_path / "x.lua").write_text("-- @function no-writes\n" + head + "return 2\n")
    assert scripts_mod.build(tmp_path)[1].name != lib_x.name
    (tmp_path / "x.lua").write_text("-- @function bogus\n" + head + "return 2\n")
    with pytest.raises(ValueError, match="unknown function flags"):
        scripts_mod.build(tmp_path)


def test_codes_in_lua_equal_the_python_enum() -> None:
    text = (LUA / "lib" / "codes.lua").read_text()
    lua = {name: int(value) for name, value in re.findall(r"local (\w+) = (-?\d+)", text)}
    assert lua == {code.name: int(code) for code in Code}


def test_code_of_maps_every_script_code_and_refuses_others() -> None:
    assert all(code_of(int(code)) is code for code in Code)
    with pytest.raises(ValueError, match="not a valid Code"):
        code_of(1)


async def test_inventory_passes_each_script_its_declared_key_and_arg_counts(
    inventory: Inventory, make_layout: Any
) -> None:
    seen: dict[str, tuple[int, int]] = {}
    original = inventory.scripts.call

    async def spy(name: str, keys: list[str], args: list[Any]) -> Any:
        seen[name] = (len(keys), len(args))
        return await original(name, keys, args)

    inventory.scripts.call = spy  # type: ignore[method-assign]
    layout = make_layout("CT")
    await inventory.open(layout)
    held = await inventory.hold(HoldRequest("CT", "u", 0, 2, 60_000, seats=[0]))
    cls = await inventory.hold(HoldRequest("CT", "u", 0, 2, 60_000, seat_class="economy", count=1))
    assert held.hold
    assert cls.hold
    await inventory.confirm_begin(held.hold.hold_id, "u")
    await inventory.confirm_abort(held.hold.hold_id)
    await inventory.confirm_begin(held.hold.hold_id, "u")
    await inventory.confirm(held.hold.hold_id, "B1")
    await inventory.release(cls.hold.hold_id, "u")
    await inventory.cancel("CT", 0, 2, [0])
    await inventory.restore("CT", [(0, 1, [1])])
    await inventory.reap("CT")
    await inventory.snapshot("CT")
    await inventory.set_status("CT", "delayed", 5, "signal")
    registry = inventory.scripts.scripts
    assert set(seen) == ENGINE_SCRIPTS
    for name, (n_keys, n_args) in seen.items():
        assert (n_keys, n_args) == (registry[name].num_keys, registry[name].num_args), name


async def test_a_wrong_key_count_is_refused_before_redis(inventory: Inventory) -> None:
    with pytest.raises(ValueError, match="takes 5 keys"):
        await inventory.scripts.call("reap", ["a", "b"], ["S", 0])


def test_include_cycles_are_refused(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.lua").write_text("-- @include lib/a.lua\n")
    (tmp_path / "x.lua").write_text("-- KEYS[1] k\n-- ARGV[1] a\n\n-- @include lib/a.lua\n")
    with pytest.raises(ValueError, match="cycle"):
        scripts_mod.load_all(tmp_path)


@pytest.fixture
def private_redis() -> Iterator[str]:
    with localstack.private_redis() as server:
        yield server.url


async def test_a_redis_that_lost_its_functions_and_scripts_is_reloaded(
    private_redis: str, make_layout: Any
) -> None:
    client = aioredis.from_url(private_redis)
    for _ in range(50):
        try:
            await client.ping()
            break
        except (ConnectionError, OSError, Exception):
            await asyncio.sleep(0.1)
    try:
        inv = Inventory(client, Keys("nos"))
        await inv.load_scripts()
        await inv.open(make_layout("N1"))
        assert await inv.scripts.missing() == []
        # what a Redis restarted without persistence looks like to the registry
        await client.function_flush()
        await client.script_flush()
        assert set(await inv.scripts.missing()) == set(inv.scripts.scripts)
        reloads = inv.scripts.reloads
        outs = await asyncio.gather(
            *(inv.hold(HoldRequest("N1", f"u{i}", 0, 1, 60_000, seats=[i])) for i in range(3))
        )
        assert [o.code for o in outs] == [Code.OK] * 3
        assert inv.scripts.reloads > reloads
        assert await inv.scripts.missing() == []
        # another version of the library next to ours does not replace our functions
        other = scripts_mod.build()[1].source.replace("local OK = 0", "local OK = 0 ")
        other = other.replace(inv.scripts.library.name, "kai_other").replace(
            "_" + inv.scripts.library.name[4:], "_other"
        )
        await client.execute_command("FUNCTION LOAD", other)
        assert await inv.scripts.missing() == []
        out = await inv.hold(HoldRequest("N1", "u9", 0, 1, 60_000, seats=[9]))
        assert out.code == Code.OK
    finally:
        await client.aclose()
