"""Where a Redis server's CPU goes while it runs our scripts, from a Linux ``perf`` recording.

    .venv/bin/python loadtests/redis_profile.py record --pid PID [--seconds 4] [--out F]
    .venv/bin/python loadtests/redis_profile.py fold F

``record`` samples the process with ``perf record --call-graph dwarf`` (frame pointers are
not kept in Redis builds) and prints the breakdown; ``fold`` prints it for a recording made
before (a ``perf.data`` file, or the text of ``perf script -F ip,sym``).

Each sample is put in one bucket by the frames on its stack: inside ``redis.call`` (the command
itself, turning its reply into Lua values, turning Lua arguments into a command, the rest of the
call), building ``KEYS``/``ARGV``, Lua's garbage collector, the script's reply, the Lua VM (the
script's own code, with the ``string``/``bit`` functions it calls), reading and parsing client
input, other. The commands run through ``redis.call`` are counted apart.

Needs a ``redis-server`` with symbols: Debian's is stripped (every frame an address), so build
one (``make MALLOC=libc`` in Redis' source) and put it first on ``PATH`` for ``bench.py``, which
starts the server it measures. docs/PERFORMANCE.md, "Ninth pass", has a run and how to make it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

Stack = list[str]  # function names, the sampled frame first

# (bucket, a frame that puts a sample in it), first match wins: a sample under redis.call is
# redis.call's whatever else is on the stack (its reply parsing allocates, so may collect)
_REDIS_CALL = "luaRedisGenericCommand"
_OUTSIDE_CALL = (
    ("KEYS/ARGV", "luaCreateArray"),
    ("script reply", "luaReplyToRedisReply"),
    ("Lua GC", "luaC_step"),
    ("Lua GC", "luaC_fullgc"),
    ("Lua VM", "luaV_execute"),
    ("FCALL setup", "fcallCommandGeneric"),
    ("FCALL setup", "evalGenericCommand"),
    ("client input", "readQueryFromClient"),
)
# frames named like commands that belong to redis.call's own machinery
_NOT_COMMANDS = frozenset(
    {_REDIS_CALL, "processCommand", "lookupCommand", "lookupCommandOrOriginal"}
)
_INSIDE_CALL = (
    ("redis.call: reply to Lua", "parseReply"),
    ("redis.call: arguments", "luaArgsToRedisArgv"),
)


@dataclass
class Breakdown:
    samples: int = 0
    buckets: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)

    def add(self, stack: Stack) -> None:
        self.samples += 1
        bucket, command = classify(stack)
        self.buckets[bucket] += 1
        if command:
            self.commands[command] += 1

    def table(self) -> str:
        def share(n: int) -> str:
            return f"{100 * n / max(1, self.samples):.1f}%"

        lines = [f"{self.samples} samples", "", "| where | share |", "|---|---:|"]
        lines += [f"| {name} | {share(n)} |" for name, n in self.buckets.most_common()]
        if self.commands:
            lines += ["", "| command (in redis.call) | share |", "|---|---:|"]
            lines += [f"| {name} | {share(n)} |" for name, n in self.commands.most_common(12)]
        return "\n".join(lines)


def classify(stack: Stack) -> tuple[str, str | None]:
    """The bucket of one sample and, inside redis.call, the command it was running."""
    if _REDIS_CALL in stack:
        inner = stack[: stack.index(_REDIS_CALL)]
        command = next((f for f in reversed(inner) if _is_command(f)), None)
        if command:
            return "redis.call: the command", command
        for bucket, frame in _INSIDE_CALL:
            if frame in inner:
                return bucket, None
        return "redis.call: the rest", None
    for bucket, frame in _OUTSIDE_CALL:
        if frame in stack:
            return bucket, None
    return "other", None


def _is_command(frame: str) -> bool:
    """Redis names a command's implementation ``<name>Command`` (``hsetCommand``...)."""
    return frame.endswith("Command") and frame not in _NOT_COMMANDS


def stacks(lines: Iterable[str]) -> Iterator[Stack]:
    """Stacks of ``perf script -F ip,sym`` text: one frame per line ("ADDR SYMBOL"), a blank
    line after each sample; inlined frames lose their " (inlined)"."""
    stack: Stack = []
    for line in lines:
        parts = line.split(None, 1)
        if not parts:
            if stack:
                yield stack
            stack = []
            continue
        symbol = parts[1].strip() if len(parts) > 1 else parts[0]
        stack.append(symbol.removesuffix(" (inlined)"))
    if stack:
        yield stack


def fold(lines: Iterable[str]) -> Breakdown:
    out = Breakdown()
    for stack in stacks(lines):
        out.add(stack)
    return out


def _perf() -> str:
    perf = shutil.which("perf")
    if perf is None:
        sys.exit("redis_profile: perf is not installed (apt-get install linux-perf)")
    return perf


def perf_script(data: Path) -> list[str]:
    done = subprocess.run(  # nosec B603 (our own arguments)
        [_perf(), "script", "-i", str(data), "-F", "ip,sym"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def record(pid: int, seconds: float, out: Path) -> None:
    command = [_perf(), "record", "-F", "999", "--call-graph", "dwarf,16384", "-p", str(pid)]
    subprocess.run(  # nosec B603
        [*command, "-o", str(out), "--", "sleep", str(seconds)],
        check=True,
        capture_output=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="sample a running redis-server, then fold")
    rec.add_argument("--pid", type=int, required=True)
    rec.add_argument("--seconds", type=float, default=4.0)
    rec.add_argument("--out", type=Path, default=Path("redis-perf.data"))
    fld = sub.add_parser("fold", help="fold a perf.data file or perf script text")
    fld.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.pid, args.seconds, args.out)
        path = args.out
    else:
        path = args.path
    with path.open("rb") as f:
        is_data = f.read(8) == b"PERFILE2"
    lines = perf_script(path) if is_data else path.read_text().splitlines()
    print(fold(lines).table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
