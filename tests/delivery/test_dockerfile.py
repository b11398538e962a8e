"""The container image, checked without a Docker engine: the Dockerfile's shape, the build
context it relies on, and the wheel it installs (built here once, the way the Dockerfile does)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEV_ONLY = ("pytest", "hypothesis", "fakeredis", "lupa", "ruff", "mypy", "locust", "bandit",
            "schemathesis", "playwright", "kubernetes-validate", "matplotlib", "build")  # fmt: skip


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of a Dockerfile: continuation lines joined, comments and parser directives dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"

    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            assert match, line
            stages.append(Stage(base=match.group(1), name=match.group(2)))
        elif keyword != "ARG" or stages:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, args.strip()))
    return stages


def build_args(text: str) -> dict[str, str]:
    """Global ARG defaults (those before the first FROM), to resolve ${ARG} in FROM lines."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("FROM"):
            break
        if line.startswith("ARG ") and "=" in line:
            name, _, value = line[4:].strip().partition("=")
            values[name] = value
    return values


@pytest.fixture(scope="module")
def dockerfile_text() -> str:
    return (ROOT / "Dockerfile").read_text()


@pytest.fixture(scope="module")
def stages(dockerfile_text: str) -> list[Stage]:
    return parse_dockerfile(dockerfile_text)


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel the image installs, built once, offline, as the Dockerfile's builder does."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), "."],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (built,) = out.glob("kai_inventory-*.whl")
    return built


def repo_files(folder: str) -> Iterator[Path]:
    for path in sorted((ROOT / folder).rglob("*")):
        relative = path.relative_to(ROOT / folder)
        if path.is_file() and not any(
            part.startswith(".") or part == "__pycache__" for part in relative.parts
        ):
            yield relative


def test_dockerfile_has_a_builder_stage_and_a_slim_python_runtime(
    dockerfile_text: str, stages: list[Stage], runtime: Stage
) -> None:
    assert len(stages) >= 2
    builder = stages[0]
    assert builder.name == "builder"
    assert any("python -m build --wheel" in run for run in builder.all("RUN"))
    args = build_args(dockerfile_text)
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], runtime.base)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    assert runtime.name == "runtime"


def test_runtime_installs_only_the_wheel_with_pinned_runtime_dependencies(runtime: Stage) -> None:
    pip_runs = [run for run in runtime.all("RUN") if "pip install" in run]
    assert len(pip_runs) == 1
    (install,) = pip_runs
    assert "kai_inventory-*.whl" in install
    assert "-c /tmp/constraints.txt" in install
    assert "[dev]" not in install
    assert "-e " not in install
    words = set(re.split(r"[\s=<>\[\]]+", install.lower()))
    assert not words & set(DEV_ONLY), words & set(DEV_ONLY)
    # nothing but the builder's output and the constraints file enter the runtime stage
    for copy in runtime.all("COPY"):
        assert copy == "constraints.txt /tmp/constraints.txt" or "--from=builder" in copy


def test_runtime_runs_as_a_non_root_user(runtime: Stage) -> None:
    users = runtime.all("USER")
    assert users, "the runtime stage must switch user"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    last_user = max(i for i, ins in enumerate(runtime.instructions) if ins.keyword == "USER")
    assert all(ins.keyword != "RUN" for ins in runtime.instructions[last_user:])


def test_healthcheck_probes_healthz_without_curl(runtime: Stage) -> None:
    (check,) = runtime.all("HEALTHCHECK")
    assert "/healthz" in check
    assert "curl" not in check
    assert "wget" not in check
    command = json.loads(check[check.index("CMD") + 3 :])
    assert command[:2] == ["python", "-c"]
    compile(command[2], "<healthcheck>", "exec")  # the one-liner is valid Python


def test_entrypoint_is_the_console_script_serving_on_the_exposed_port(runtime: Stage) -> None:
    assert json.loads(runtime.all("ENTRYPOINT")[-1]) == ["kai-inventory"]
    cmd = json.loads(runtime.all("CMD")[-1])
    assert cmd[0] == "serve"
    port = cmd[cmd.index("--port") + 1]
    assert runtime.all("EXPOSE") == [port] == ["8080"]
    assert f"127.0.0.1:{port}/healthz" in runtime.all("HEALTHCHECK")[0]


def test_runtime_sets_no_unknown_kai_setting(runtime: Stage) -> None:
    from kai_inventory.settings import load_settings

    env: dict[str, str] = {}
    for line in runtime.all("ENV"):
        for item in shlex.split(line):
            key, _, value = item.partition("=")
            env[key] = value
    load_settings({k: v for k, v in env.items() if k.startswith("KAI_")})


def test_dockerignore_keeps_out_what_the_build_does_not_copy_and_keeps_what_it_does(
    stages: list[Stage],
) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, p.removeprefix("**/"))
            or fnmatch.fnmatch(path.split("/")[0], p)
            or fnmatch.fnmatch(os.path.basename(path), p.removeprefix("**/"))
            for p in patterns
        )

    sources = [
        src
        for stage in stages
        for copy in stage.all("COPY")
        if "--from=" not in copy
        for src in copy.split()[:-1]
    ]
    assert {"pyproject.toml", "kai_inventory", "lua", "migrations"} <= set(sources)
    for src in sources:
        assert not ignored(src), f"{src} is copied but excluded by .dockerignore"
    for heavy in (".git", ".venv", "tests", "var", "kai_inventory/__pycache__/x.pyc"):
        assert ignored(heavy), f"{heavy} should stay out of the build context"


def test_wheel_ships_every_lua_script_and_migration(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("lua", "migrations"):
        files = list(repo_files(folder))
        for relative in files:
            assert f"kai_inventory/{folder}/{relative.as_posix()}" in names
    assert any(n.startswith("kai_inventory/lua/") and n.endswith(".lua") for n in names)
    assert any(n.startswith("kai_inventory/migrations/") and n.endswith(".sql") for n in names)


def test_installed_wheel_finds_its_lua_and_migrations_inside_the_package(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import kai_inventory.resources as r;"
        "print(r.lua_dir()); print(r.migrations_dir()); print(r.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {probe}"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    lua, migrations, module = (Path(p) for p in out)
    assert module.is_relative_to(site)
    assert lua == site / "kai_inventory" / "lua"
    assert migrations == site / "kai_inventory" / "migrations"
    assert sorted(p.name for p in migrations.glob("*.sql")) == sorted(
        p.name for p in (ROOT / "migrations").glob("*.sql")
    )


def test_wheel_requires_no_development_tool_at_run_time(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    required = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    names = {re.split(r"[\s\[<>=;!~]", r, maxsplit=1)[0].lower() for r in required}
    assert {"aiohttp", "redis", "asyncpg", "msgspec", "prometheus-client"} <= names
    assert not names & set(DEV_ONLY)
    assert (
        "kai-inventory = kai_inventory.cli:main"
        in zipfile.ZipFile(wheel)
        .read(next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("entry_points.txt")))
        .decode()
    )
