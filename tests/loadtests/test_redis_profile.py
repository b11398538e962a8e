"""redis_profile.py's folding of perf stacks into where Redis' time goes (no perf needed)."""

from __future__ import annotations

import redis_profile

# perf script -F ip,sym: the sampled frame first, a blank line after each sample
TEXT = """
\t  148a1a sweeplist
\t  149a1c luaC_step
\t  14449c luaV_execute
\t  13330e luaCallFunction

\t  1aa001 hsetCommand
\t  1aa002 call
\t  1aa003 scriptCall
\t  1aa004 luaRedisGenericCommand
\t  1aa005 luaD_precall
\t  14449c luaV_execute

\t  1ab001 luaS_newlstr
\t  1ab002 parseBulk (inlined)
\t  1ab003 parseReply
\t  1aa004 luaRedisGenericCommand
\t  14449c luaV_execute

\t  1ac001 lookupCommand
\t  1aa004 luaRedisGenericCommand
\t  14449c luaV_execute

\t  1ad001 str_byte
\t  14449c luaV_execute

\t  1ae001 lua_pushlstring
\t  1ae002 luaCreateArray
\t  13330e luaCallFunction

\t  1af001 memcpy
\t  1af002 readQueryFromClient
"""


def test_fold_puts_each_sample_in_the_bucket_of_its_stack() -> None:
    out = redis_profile.fold(TEXT.splitlines())
    assert out.samples == 7
    assert out.buckets == {
        "Lua GC": 1,
        "redis.call: the command": 1,
        "redis.call: reply to Lua": 1,
        "redis.call: the rest": 1,
        "Lua VM": 1,
        "KEYS/ARGV": 1,
        "client input": 1,
    }


def test_fold_counts_the_command_run_by_redis_call_not_the_command_lookup() -> None:
    out = redis_profile.fold(TEXT.splitlines())
    assert out.commands == {"hsetCommand": 1}


def test_stacks_drop_the_inlined_marker_and_keep_the_sampled_frame_first() -> None:
    stacks = list(redis_profile.stacks(["  1 parseBulk (inlined)", "  2 parseReply", ""]))
    assert stacks == [["parseBulk", "parseReply"]]


def test_table_gives_shares_of_all_samples() -> None:
    table = redis_profile.fold(TEXT.splitlines()).table()
    assert "| Lua GC | 14.3% |" in table
    assert "| hsetCommand | 14.3% |" in table
