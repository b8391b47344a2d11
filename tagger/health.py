"""Readiness checks, shared by `/ready` and `tagger health`: server, groups, sinks' lag."""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from tagger.errors import SERVER_ERRORS, GroupMissing, server_advice
from tagger.keys import Keys


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def consumer_groups(
    partitions: Sequence[Keys], tagging: bool, sink_names: Sequence[str]
) -> list[tuple[str, str]]:
    """(stream, group) of every consumer group a worker of this shape reads."""
    pairs = []
    for keys in partitions:
        if tagging:
            pairs += [(keys.input_stream, keys.group), (keys.control_stream, keys.group)]
        pairs += [(keys.output_stream, keys.sink_group(s)) for s in sink_names]
    return pairs


async def group_backlog(client: Redis, stream: str, group_name: str) -> tuple[int, int]:
    """(entries never delivered to the group, entries delivered but not acked)."""
    try:
        groups = await client.xinfo_groups(stream)
    except redis_errors.ResponseError:  # no such stream
        groups = []
    for group in groups:
        if group["name"].decode() == group_name:
            lag = group.get("lag")
            if lag is None:  # Redis cannot count past deleted entries: is anything left?
                after = b"(" + group["last-delivered-id"]
                rest: Any = await client.xrange(stream, min=after, max="+", count=1)
                lag = len(rest)  # 0, or 1 meaning "at least one"
            return int(lag), int(group["pending"])
    raise GroupMissing(
        f"consumer group '{group_name}' does not exist on stream '{stream}'; "
        "start the tagger once (`tagger run`) to create it"
    )


READY_TIMEOUT_S = 2.0  # /ready and `tagger health` answer within this, whatever the network


async def readiness(
    client: Redis,
    partitions: Sequence[Keys],
    *,
    tagging: bool,
    sink_names: Sequence[str],
    max_sink_lag: int,
    max_input_lag: int,
) -> list[Check]:
    """Every check, passed or not; the server check alone when the server does not answer
    (within READY_TIMEOUT_S: a partition drops packets, and a probe must not hang on it)."""
    try:
        return await asyncio.wait_for(
            _checks(client, partitions, tagging, sink_names, max_sink_lag, max_input_lag),
            READY_TIMEOUT_S,
        )
    except SERVER_ERRORS as exc:  # it went away between the checks' commands
        return [Check("server", False, f"{exc}; {server_advice(exc)}")]
    except TimeoutError:
        detail = (
            f"no answer within {READY_TIMEOUT_S:.0f} s: the server is down, overloaded or "
            "unreachable (a network partition?); check it and the network to it"
        )
        return [Check("server", False, detail)]


async def _checks(
    client: Redis,
    partitions: Sequence[Keys],
    tagging: bool,
    sink_names: Sequence[str],
    max_sink_lag: int,
    max_input_lag: int,
) -> list[Check]:
    try:
        await client.ping()
    except SERVER_ERRORS as exc:
        return [Check("server", False, f"{exc}; {server_advice(exc)}")]
    checks = [Check("server", True, "answers PING")]
    sink_groups = {partitions[0].sink_group(s): s for s in sink_names}
    input_streams = {keys.input_stream for keys in partitions} if tagging else set()
    for stream, group in consumer_groups(partitions, tagging, sink_names):
        try:
            undelivered, pending = await group_backlog(client, stream, group)
        except GroupMissing as exc:
            checks.append(Check(f"group {group} on {stream}", False, str(exc)))
            continue
        checks.append(Check(f"group {group} on {stream}", True, "exists"))
        if stream in input_streams:
            # Overload shows here first: a producer faster than the taggers grows this
            # backlog while every sink keeps up with what was tagged.
            waiting = undelivered + pending
            detail = f"{waiting} input entries not yet tagged (limit {max_input_lag})"
            if waiting > max_input_lag:
                detail += (
                    "; the taggers are behind: check their logs and the server's load, or "
                    "add workers (docs/operators.md, Scaling)"
                )
            name = "input" + (f" {stream}" if len(partitions) > 1 else "")
            checks.append(Check(name, waiting <= max_input_lag, detail))
        if group in sink_groups:
            lag = undelivered + pending
            detail = f"{lag} tagged entries not yet stored (limit {max_sink_lag})"
            if lag > max_sink_lag:
                detail += "; check the sink's disk and logs, or run `tagger run --sinks-only`"
            name = f"sink {sink_groups[group]}" + (f" on {stream}" if len(partitions) > 1 else "")
            checks.append(Check(name, lag <= max_sink_lag, detail))
    return checks
