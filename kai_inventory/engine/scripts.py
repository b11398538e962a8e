"""The Lua script registry: the engine's operations as one Redis Functions library (FCALL), the
other scripts by EVALSHA; a Redis that lost them is reloaded and the call retried.

Each ``lua/*.lua`` file is one operation and opens with a header naming its keys
(``-- KEYS[1] meta: ...``) and arguments; the number of ``KEYS[i]`` lines is the operation's key
count, checked on every call. Lines of the form ``-- @include lib/x.lua`` pull in a shared file
from ``lua/lib/``.

A file whose header has a ``-- @function`` line (``-- @function no-writes`` for one that never
writes: called by ``FCALL_RO``) becomes a function of the library: the loader builds one library
source from all of them, with every included ``lib`` file pasted once at library level (its
helpers are defined when the library loads, not on every call) and each file's body wrapped as
``function(keys, args) KEYS, ARGV = keys, args <body> end``, so the bodies read ``KEYS`` and
``ARGV`` as scripts do. A ``lib`` line ``-- @on-call <lua>`` adds that statement to the start of
every function (per-call state a lib keeps). The library's name and every function's name carry
a hash of the library source: two versions of the code (a rolling deploy, a test run next to a
server) never replace each other's functions. Other files (the waiting room's) are EVALSHA
scripts with their includes expanded in place.

Each script is loaded in one of two modes, chosen when the registry is built: a line
``local CLUSTER, PUB = false, 'PUBLISH'`` (single Redis) or ``true, 'SPUBLISH'`` (Redis Cluster)
is put in front of the source, so the library (and each SHA) differs per mode and a script never
branches on an argument for it. See docs/SCALING.md for what the Cluster mode leaves to the
caller. On Cluster the library is loaded on every master; a master that does not have it (a
restart without persistence, a node that joined) answers "Function not found", and the library
is loaded everywhere again and the call retried, as for NOSCRIPT.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from kai_inventory.engine.pipeline import AutoPipeline
from kai_inventory.resources import lua_dir

log = logging.getLogger(__name__)


_INCLUDE = re.compile(r"^--\s*@include\s+(\S+)\s*$", re.MULTILINE)
_KEY_LINE = re.compile(r"^--\s*KEYS\[(\d+)\]", re.MULTILINE)
_ARGV_LINE = re.compile(r"^--\s*ARGV\[(\d+)\]", re.MULTILINE)
_FUNCTION_LINE = re.compile(r"^--\s*@function\b(.*)$", re.MULTILINE)
_ON_CALL = re.compile(r"^--\s*@on-call\s+(.+?)\s*$", re.MULTILINE)
_FLAGS = frozenset({"no-writes", "allow-oom", "allow-stale", "no-cluster", "allow-cross-slot-keys"})


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str  # EVAL: the expanded script; function: the body wrapped into the library
    sha: str  # EVAL: the script's SHA1; function: the library's SHA1
    num_keys: int
    num_args: int
    function: str = ""  # the FCALL name; '' = an EVALSHA script
    flags: tuple[str, ...] = ()
    command: tuple[Any, ...] = ()  # what a call sends before its keys and arguments

    @property
    def read_only(self) -> bool:
        return "no-writes" in self.flags


@dataclass(frozen=True, slots=True)
class Library:
    name: str
    source: str  # starts with the '#!lua name=...' shebang
    sha: str
    functions: tuple[str, ...]


def _expand(text: str, base: Path, seen: tuple[str, ...] = ()) -> str:
    def include(match: re.Match[str]) -> str:
        rel = match.group(1)
        if rel in seen:
            raise ValueError(f"include cycle: {' -> '.join((*seen, rel))}")
        return _expand((base / rel).read_text(encoding="utf-8"), base, (*seen, rel))

    return _INCLUDE.sub(include, text)


def _expand_once(text: str, base: Path, done: set[str], seen: tuple[str, ...] = ()) -> str:
    """Like ``_expand``, but each file is pasted only the first time (library level)."""

    def include(match: re.Match[str]) -> str:
        rel = match.group(1)
        if rel in seen:
            raise ValueError(f"include cycle: {' -> '.join((*seen, rel))}")
        if rel in done:
            return ""
        done.add(rel)
        return _expand_once((base / rel).read_text(encoding="utf-8"), base, done, (*seen, rel))

    return _INCLUDE.sub(include, text)


def _header(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    return "\n".join(lines)


def _count(pattern: re.Pattern[str], header: str, name: str, what: str) -> int:
    indices = sorted(int(m) for m in pattern.findall(header))
    if indices != list(range(1, len(indices) + 1)):
        raise ValueError(f"{name}: {what} lines in the header must be numbered 1..n, got {indices}")
    return len(indices)


def _flags(header: str, name: str) -> tuple[str, ...] | None:
    """None: not a function; else the function's flags."""
    match = _FUNCTION_LINE.search(header)
    if match is None:
        return None
    flags = tuple(match.group(1).split())
    unknown = set(flags) - _FLAGS
    if unknown:
        raise ValueError(f"{name}: unknown function flags {sorted(unknown)}")
    return flags


_MODE_LINE = {
    False: "local CLUSTER, PUB = false, 'PUBLISH'\n",
    True: "local CLUSTER, PUB = true, 'SPUBLISH'\n",
}


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def load_script(path: Path, base: Path, cluster: bool = False) -> Script:
    """One file as an EVALSHA script (its includes expanded in place)."""
    raw = path.read_text(encoding="utf-8")
    header = _header(raw)
    source = _MODE_LINE[cluster] + _expand(raw, base)
    num_keys = _count(_KEY_LINE, header, path.name, "KEYS")
    sha = _sha(source)
    return Script(
        name=path.stem,
        source=source,
        sha=sha,
        num_keys=num_keys,
        num_args=_count(_ARGV_LINE, header, path.name, "ARGV"),
        command=("EVALSHA", sha, num_keys),
    )


def build(
    directory: Path | None = None, cluster: bool = False
) -> tuple[dict[str, Script], Library]:
    """Every ``*.lua`` of ``directory``: the functions' library and all scripts by name."""
    base = directory or lua_dir()
    paths = sorted(base.glob("*.lua"))
    scripts: dict[str, Script] = {}
    done: set[str] = set()
    libs: list[str] = []
    bodies: list[tuple[Path, str, tuple[str, ...], int, int]] = []
    for path in paths:
        raw = path.read_text(encoding="utf-8")
        header = _header(raw)
        flags = _flags(header, path.name)
        if flags is None:
            scripts[path.stem] = load_script(path, base, cluster)
            continue

        # the includes go to library level (once each); the rest is the function's body
        def to_library(match: re.Match[str]) -> str:
            libs.append(_expand_once(match.group(0), base, done))
            return ""

        body = _INCLUDE.sub(to_library, raw)
        bodies.append(
            (
                path,
                body,
                flags,
                _count(_KEY_LINE, header, path.name, "KEYS"),
                _count(_ARGV_LINE, header, path.name, "ARGV"),
            )
        )
    lib_text = "\n".join(part for part in libs if part)
    on_call = " ".join(_ON_CALL.findall(lib_text))
    prelude = _MODE_LINE[cluster] + "local KEYS, ARGV = {}, {}\n" + lib_text + "\n"
    wrapped = []
    for path, body, flags, _, _ in bodies:
        flag_list = ", ".join(f"'{f}'" for f in flags)
        wrapped.append(
            f"-- {path.name}\nredis.register_function{{function_name = '%FN:{path.stem}%',"
            f" flags = {{{flag_list}}}, callback = function(keys, args)\n"
            f"KEYS, ARGV = keys, args {on_call}\n{body}\nend}}\n"
        )
    code = prelude + "\n".join(wrapped)
    tag = _sha(code)[:12]
    lib_name = f"kai_{tag}"
    source = re.sub(r"%FN:(\w+)%", lambda m: f"{m.group(1)}_{tag}", code)
    source = f"#!lua name={lib_name}\n" + source
    lib_sha = _sha(source)
    names: list[str] = []
    for path, body, flags, num_keys, num_args in bodies:
        fname = f"{path.stem}_{tag}"
        names.append(fname)
        scripts[path.stem] = Script(
            name=path.stem,
            source=body,
            sha=lib_sha,
            num_keys=num_keys,
            num_args=num_args,
            function=fname,
            flags=flags,
            command=("FCALL_RO" if "no-writes" in flags else "FCALL", fname, num_keys),
        )
    library = Library(lib_name, source, lib_sha, tuple(names))
    return dict(sorted(scripts.items())), library


def load_all(directory: Path | None = None, cluster: bool = False) -> dict[str, Script]:
    return build(directory, cluster)[0]


def _missing_function(exc: Exception) -> bool:
    text = str(exc)
    return text.startswith("NOSCRIPT") or "Function not found" in text


class ScriptRegistry:
    """Scripts by name; ``call`` runs one through the auto-pipeline.

    ``cluster``: load the Redis Cluster variants (see the module docstring). Retries through
    a failover or resharding are the auto-pipeline's (``AutoPipeline(retry_s=...)``).
    """

    def __init__(
        self,
        client: Any,
        pipeline: AutoPipeline,
        directory: Path | None = None,
        *,
        cluster: bool = False,
    ) -> None:
        self._client = client
        self._pipeline = pipeline
        self.cluster = cluster
        self.scripts, self.library = build(directory, cluster)
        self.reloads = 0

    def __getitem__(self, name: str) -> Script:
        return self.scripts[name]

    def use(self, directory: Path) -> None:
        """Switch to the scripts of another ``lua/`` directory (benchmarks); call ``load``."""
        self.scripts, self.library = build(directory, self.cluster)

    async def load(self) -> None:
        """FUNCTION LOAD the library and SCRIPT LOAD every other script (once at start-up; also
        after NOSCRIPT / Function not found). On Cluster the client sends both to every master.

        A library of the same name is the same source (the name carries its hash), so one
        already there is kept, not replaced: replacing it would reset its library-level state
        (the expired-hold count, the caches) whenever another process starts."""
        if self.library.functions:
            try:
                await self._client.execute_command("FUNCTION LOAD", self.library.source)
            except ResponseError as exc:
                if "already exists" not in str(exc):
                    raise
                if await self._library_missing():  # Cluster: present on some masters only
                    await self._client.execute_command(
                        "FUNCTION LOAD", "REPLACE", self.library.source
                    )
        for script in self.scripts.values():
            if script.function:
                continue
            sha = await self._client.script_load(script.source)
            if isinstance(sha, bytes):
                sha = sha.decode()
            if sha != script.sha:
                raise RuntimeError(f"{script.name}: Redis sha {sha}, expected {script.sha}")
        self.reloads += 1

    async def missing(self) -> list[str]:
        """Names of the scripts Redis (on Cluster: some master) does not have loaded."""
        out: list[str] = []
        if self.library.functions and await self._library_missing():
            out += [s.name for s in self.scripts.values() if s.function]
        evals = [s for s in self.scripts.values() if not s.function]
        if evals:
            present = await self._client.script_exists(*(s.sha for s in evals))
            out += [s.name for s, ok in zip(evals, present, strict=True) if not ok]
        return out

    async def _library_missing(self) -> bool:
        """Redis (on Cluster: some master) does not have the library."""
        reply = await self._client.execute_command(
            "FUNCTION LIST", "LIBRARYNAME", self.library.name
        )
        per_node = list(reply.values()) if isinstance(reply, dict) else [reply]
        found = [
            any(_lib_name(entry) == self.library.name for entry in node or []) for node in per_node
        ]
        return not per_node or not all(found)

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        script = self.scripts[name]
        if len(keys) != script.num_keys:
            raise ValueError(f"{name} takes {script.num_keys} keys, got {len(keys)}")
        if len(args) != script.num_args:
            raise ValueError(f"{name} takes {script.num_args} arguments, got {len(args)}")
        command = (*script.command, *keys, *args)
        try:
            return await self._pipeline.execute(*command)
        except (NoScriptError, ResponseError) as exc:
            await self._reload_if_lost(name, exc)
        return await self._pipeline.execute(*command)

    async def _reload_if_lost(self, name: str, exc: Exception) -> None:
        """Load the scripts again when ``exc`` says Redis lost them (NOSCRIPT, "Function not
        found": a restart without persistence, a failover), for the caller's one retry; any
        other error is raised."""
        if not isinstance(exc, NoScriptError):
            if not _missing_function(exc):  # some clients do not map NOSCRIPT
                raise exc
            log.warning("%s: %s; loading the scripts again", name, exc)
        await self.load()

    async def call_on_every_server(self, name: str, args: Sequence[Any] = ()) -> list[Any]:
        """Run a function that takes no keys on every Redis server holding the library: one
        reply per server. One Redis: one call (through the auto-pipeline). On
        Cluster: every master, by redis-py's ``target_nodes=PRIMARIES`` (as ``load`` reaches
        every master; its own retries cover a cluster in motion). A server that lost the
        library is loaded again and the call retried, as in ``call``."""
        script = self.scripts[name]
        if script.num_keys:
            raise ValueError(f"{name} takes keys: it cannot run on every server")
        if len(args) != script.num_args:
            raise ValueError(f"{name} takes {script.num_args} arguments, got {len(args)}")
        command = (*script.command, *args)

        async def once() -> list[Any]:
            if not self.cluster:
                return [await self._pipeline.execute(*command)]
            reply = await self._client.execute_command(
                *command, target_nodes=self._client.PRIMARIES
            )
            return list(reply.values()) if isinstance(reply, dict) else [reply]

        try:
            return await once()
        except (NoScriptError, ResponseError) as exc:
            await self._reload_if_lost(name, exc)
        return await once()


def _lib_name(entry: Any) -> str:
    """The library name of one FUNCTION LIST entry (a flat list, or a dict with RESP3)."""
    if isinstance(entry, dict):
        value = entry.get(b"library_name", entry.get("library_name", b""))
    else:
        items = list(entry)
        value = b""
        for i in range(0, len(items) - 1, 2):
            if items[i] in (b"library_name", "library_name"):
                value = items[i + 1]
                break
    return value.decode() if isinstance(value, bytes) else str(value)
