"""bench.py's report plumbing and run.py's server environment (no server, no wrk needed)."""

from __future__ import annotations

from pathlib import Path

import bench
import pytest
import run

BLOCK = f"{bench.BEGIN}\nnew figures\n{bench.END}"


def test_write_doc_replaces_only_the_generated_block(tmp_path: Path) -> None:
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text(
        f"# Performance\n\nhand-written intro\n\n{bench.BEGIN}\nold figures\n{bench.END}\n\n"
        "## WebSocket fan-out\n\nwritten by someone else\n"
    )
    bench.write_doc(BLOCK, doc)
    text = doc.read_text()
    assert "new figures" in text
    assert "old figures" not in text
    assert "hand-written intro" in text
    assert text.endswith("## WebSocket fan-out\n\nwritten by someone else\n")


def test_write_doc_appends_a_block_to_a_page_without_markers(tmp_path: Path) -> None:
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text("# Performance\n\n## WebSocket fan-out\n\nkept\n")
    bench.write_doc(BLOCK, doc)
    text = doc.read_text()
    assert text.index("## WebSocket fan-out") < text.index("new figures")
    assert "kept" in text


def test_write_doc_creates_the_page_when_missing(tmp_path: Path) -> None:
    doc = tmp_path / "PERFORMANCE.md"
    bench.write_doc(BLOCK, doc)
    assert doc.read_text().startswith("# Performance")
    assert "new figures" in doc.read_text()


def test_profile_summary_gives_inclusive_and_self_shares() -> None:
    raw = "\n".join(
        [
            "main (/work/main/kai_inventory/cli.py:80);handle (site-packages/aiohttp/web.py:10) 3",
            "main (/work/main/kai_inventory/cli.py:80);hold (/work/main/kai_inventory/x.py:5) 1",
        ]
    )
    summary = bench.summarize_profile(raw)
    inclusive = dict(summary["inclusive"])
    assert summary["samples"] == 4
    assert inclusive["main (kai_inventory/cli.py)"] == 1.0
    assert inclusive["handle (aiohttp/web.py)"] == pytest.approx(0.75)
    assert dict(summary["self"])["hold (kai_inventory/x.py)"] == pytest.approx(0.25)


def test_wrk_script_holds_each_request_with_headers_and_body(tmp_path: Path) -> None:
    script = tmp_path / "holds.lua"
    bench.write_wrk_script(
        script,
        [
            ("POST", "/v1/holds", {"Authorization": "Bearer t.k.n"}, '{"count":1}'),
            ("GET", "/h", {}, ""),
        ],
    )
    text = script.read_text()
    # "[ [==[" not "[[==[": a long string right after "[" would open a Lua long bracket
    assert (
        "{[==[POST]==], [==[/v1/holds]==], {[ [==[Authorization]==] ] = [==[Bearer t.k.n]==]}"
        in text
    )
    assert '[==[{"count":1}]==]},' in text
    assert "{[==[GET]==], [==[/h]==], {}, nil}," in text


def test_wrk_counts_statuses_in_lua_only_when_asked(tmp_path: Path) -> None:
    plain, counted = tmp_path / "plain.lua", tmp_path / "counted.lua"
    bench.write_wrk_script(plain, [("GET", "/h", {}, "")])
    bench.write_wrk_script(counted, [("GET", "/h", {}, "")], count_statuses=True)
    assert "function response(" not in plain.read_text()
    assert "function response(" in counted.read_text()


def _wrk_data(
    status: dict[str, int], requests: int = 100, non2xx: int = 0
) -> dict[str, int | dict[str, int]]:
    return {"status": status, "requests": requests, "non2xx": non2xx}


def test_without_counts_any_answer_over_399_fails_the_no_5xx_check() -> None:
    def result(status: dict[str, int]) -> bench.LoadResult:
        return bench.LoadResult("n", "l", 1, 1.0, 1.0, 1.0, 100, status, 0)

    counted = bench.wrk_statuses(_wrk_data({"201": 60, "409": 40}))
    assert counted == {"201": 60, "409": 40}
    assert result(counted).n5xx == 0
    clean = bench.wrk_statuses(_wrk_data({}))
    assert clean == {"2xx/3xx": 100}
    assert result(clean).n5xx == 0
    unknown = bench.wrk_statuses(_wrk_data({}, non2xx=3))
    assert unknown == {"2xx/3xx": 97, "4xx/5xx": 3}
    assert result(unknown).n5xx == 3
    assert result({"201": 5, "503": 2}).n5xx == 2


def test_server_environment_drops_stray_kai_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAI_TYPO_SETTING", "1")
    monkeypatch.setenv("KAILT_RUN", "x")
    env = run.server_env("lt1234", "postgresql://h/db", {"KAI_HOLD_TTL_S": "5"})
    assert "KAI_TYPO_SETTING" not in env
    assert "KAILT_RUN" not in env
    assert env["KAI_KEY_PREFIX"] == "lt1234"
    assert env["KAI_MAX_ACTIVE_HOLDS_PER_USER"] == "0"
    assert env["KAI_HOLD_RATE_PER_MIN"] == "0"
    assert env["KAI_HOLD_TTL_S"] == "5"
    assert len(env["KAI_JWT_SECRET"]) >= 16


def _run(name: str, rps: float, p99: float = 10.0, status: str = "2xx/3xx") -> bench.LoadResult:
    return bench.LoadResult(
        name=name,
        label=name,
        workers=1,
        rps=rps,
        p50_ms=1.0,
        p99_ms=p99,
        requests=int(rps),
        status={status: int(rps)},
        errors=0,
    )


def test_rounds_pair_each_run_with_the_baseline_just_before_it() -> None:
    baselines = [_run("healthz-1w", 10_000), _run("healthz-1w", 20_000), _run("healthz-1w", 16_000)]
    holds = [_run("holds-1w", 5_000, 30.0), _run("holds-1w", 9_000, 12.0), _run("holds-1w", 8_800)]
    combined = bench.combine_rounds(holds, baselines)
    assert combined.rounds == [0.5, 0.45, 0.55]
    # the median of the per-round ratios, not the ratio of the medians (8,800 / 16,000)
    assert combined.ratio == 0.5
    assert combined.rps == 8_800
    assert combined.p99_ms == 12.0
    assert combined.requests == 22_800
    assert combined.status == {"2xx/3xx": 22_800}


def test_an_error_status_of_any_round_reaches_the_combined_figure() -> None:
    baselines = [_run("healthz-1w", 10_000)] * 3
    holds = [_run("holds-1w", 5_000), _run("holds-1w", 10, status="5xx"), _run("holds-1w", 5_000)]
    combined = bench.combine_rounds(holds, baselines)
    assert combined.n5xx == 10
