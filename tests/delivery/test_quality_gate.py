"""The quality gate (`make test`, run by .ci/run): its stages, their order, and a split of the
test suite in which every test runs in exactly one stage."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = [
    "ruff-lint",
    "ruff-format",
    "mypy",
    "bandit",
    "unit-tests",
    "integration-tests",
    "browser-tests",
    "manifests",
    "alert-rules",
    "locust-smoke",
]


def dry_run(target: str) -> list[list[str]]:
    """The commands `make -n TARGET` would run, continuation lines joined, shell-split."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    out = subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [shlex.split(line) for line in out.replace("\\\n", " ").splitlines() if line.strip()]


def stage_commands(target: str) -> dict[str, list[str]]:
    """stage name -> its command, in the order `make -n` prints them."""
    stages: dict[str, list[str]] = {}
    for words in dry_run(target):
        for i, word in enumerate(words):
            if word.endswith("scripts/stage.sh"):
                rest = words[i + 1 :]
                if rest[0] == "--no-tests-ok":
                    rest = rest[1:]
                stages[rest[0]] = rest[1:]
    return stages


def test_ci_runs_make_test_and_nothing_else() -> None:
    commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands[-1] == "exec make test"
    assert all(c.startswith(("set ", "cd ", "exec make test")) for c in commands)


def test_make_test_runs_every_stage_in_order() -> None:
    assert list(stage_commands("test")) == STAGES


def test_make_check_runs_the_quick_stages_only() -> None:
    assert list(stage_commands("check")) == ["ruff-lint", "ruff-format", "mypy", "bandit"]


def test_stage_script_reports_name_status_and_duration_and_fails_fast(tmp_path: Path) -> None:
    log = tmp_path / "stages.log"
    env = {**os.environ, "STAGE_LOG": str(log)}
    stage = str(ROOT / "scripts" / "stage.sh")
    ok = subprocess.run([stage, "good", "true"], env=env, capture_output=True, text=True)
    failing = [stage, "bad", "sh", "-c", "exit 3"]
    bad = subprocess.run(failing, env=env, capture_output=True, text=True)
    empty = [stage, "--no-tests-ok", "empty", "sh", "-c", "exit 5"]
    allowed = subprocess.run(empty, env=env, capture_output=True, text=True)
    assert (ok.returncode, bad.returncode, allowed.returncode) == (0, 3, 0)
    assert "==> stage good: ok in" in ok.stdout
    assert "==> stage bad: FAILED in" in bad.stdout
    assert "==> stage empty: ok (no tests) in" in allowed.stdout
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["good", "bad", "empty"]


def collect(args: list[str]) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (0, 5), result.stdout[-3000:] + result.stderr[-3000:]
    return {line for line in result.stdout.splitlines() if "::" in line}


@pytest.mark.slow
def test_every_test_runs_in_exactly_one_stage() -> None:
    stages = stage_commands("test")
    selections: dict[str, set[str]] = {}
    for name, command in stages.items():
        if any(word.endswith("pytest") for word in command):
            args = command[next(i for i, w in enumerate(command) if w.endswith("pytest")) + 1 :]
            selections[name] = collect([a for a in args if a != "-q"])
    assert set(selections) == {
        "unit-tests",
        "integration-tests",
        "browser-tests",
        "manifests",
        "alert-rules",
    }
    everything = collect([])
    seen: dict[str, str] = {}
    for name, tests in selections.items():
        for test in tests:
            assert test not in seen, f"{test} runs in both {seen[test]} and {name}"
            seen[test] = name
    assert set(seen) == everything, f"never run: {sorted(everything - set(seen))[:10]}"
    assert all(t.startswith("tests/integration/") for t in selections["integration-tests"])
    assert all(t.startswith("tests/delivery/") for t in selections["manifests"])
