"""docs/DATA.md shows the diagram of the schema the migrations build today."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from kai_inventory.persist.erd import BEGIN, END, generate, replace_block

DATA_MD = Path(__file__).resolve().parents[2] / "docs" / "DATA.md"


async def test_docs_data_md_holds_the_diagram_generated_from_the_migrated_schema(migrated_dsn):
    conn = await asyncpg.connect(migrated_dsn)
    try:
        diagram = await generate(conn)
    finally:
        await conn.close()
    text = DATA_MD.read_text(encoding="utf-8")
    assert f"{BEGIN}\n{diagram}{END}" in text, (
        "docs/DATA.md is stale: run python -m kai_inventory.persist.erd --dsn <migrated DSN>"
        " --write docs/DATA.md"
    )
    assert "    tickets {" in diagram
    assert "int4range legs" in diagram
    assert "    passengers ||--o| tickets : passenger_id" in diagram
    assert "schema_migrations" not in diagram


def test_replace_block_swaps_only_the_generated_part():
    text = f"head\n{BEGIN}\nold\n{END}\ntail\n"
    assert replace_block(text, "new\n") == f"head\n{BEGIN}\nnew\n{END}\ntail\n"
    with pytest.raises(ValueError, match="marker"):
        replace_block("no markers", "x")
