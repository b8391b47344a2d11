"""The session rules (tagger/rules) without a server: against the reference model, fast,
and each rule of start/end/sweep and the state codec on its own."""

import os
import random
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagger.intake import Accepted
from tagger.rules import (
    ControlRequest,
    CounterNames,
    Counts,
    Limits,
    Outcome,
    SessionState,
    Span,
    control,
    decode_state,
    encode_state,
    needs_history,
    new_sid,
    sweep,
    tag,
)
from tagger.rules.state import OVERFLOW, counters_by_name, number_named
from tagger.times import iso_ms
from tests.reference import check_bracketing, observed_partition, reference_partition

TIMEOUT_MS, MAX_SESSION_MS = 60_000, 150_000
LIMITS = Limits(TIMEOUT_MS, MAX_SESSION_MS)
T0 = 1_750_000_000_000
NOW = T0 + 10**9  # wall clock, far from event time: the rules never mix the two


def accepted(user: str, ts: int, n: int, record_id: str | None = None, **kw: str) -> Accepted:
    rid = record_id or str(uuid.UUID(int=n, version=4))
    head = orjson.dumps({"record_id": rid, "user_id": user, "ts": ts})[:-1]
    return Accepted(
        entry_id=f"{n + 1}-0".encode(), user_id=user, record_id=rid, ts_ms=ts, head=head,
        upstream_session_id=kw.get("upstream", ""), modality=kw.get("modality", "gesture"),
        source=kw.get("source", "cam"),
    )  # fmt: skip


@dataclass
class Partition:
    """What the runtime does between batches, in memory: the owner's states, and the
    registry's spans that `needs_history` users get (newest first)."""

    states: dict[str, SessionState] = field(default_factory=dict)
    spans: dict[str, Span] = field(default_factory=dict)
    by_user: dict[str, list[str]] = field(default_factory=dict)
    names: CounterNames = field(default_factory=CounterNames)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)  # closed, by sid
    dedup: set[str] = field(default_factory=set)  # the server's dedup marks
    counts: Counts = field(default_factory=Counts)

    def history(self, users: list[str]) -> dict[str, list[Span]]:
        found = {}
        for user in users:
            spans = [self.spans[sid] for sid in self.by_user.get(user, [])]
            spans.sort(key=lambda s: (s.start_ms, s.sid), reverse=True)
            found[user] = [Span(s.sid, s.start_ms, s.first_ms, s.last_ms, s.seq) for s in spans]
        return found

    def commit(self, out: Outcome) -> None:
        for o in out.opened:
            self.spans[o.sid] = Span(o.sid, o.start_ms, -1, -1, 0)
            self.by_user.setdefault(o.user_id, []).append(o.sid)
        for _user, s, _reason, _performer, _end in out.closed:
            span = self.spans[s.sid]
            span.first_ms, span.seq = s.first_ms, s.seq
            span.last_ms = s.last_ms if s.seq else -1
            self.counters[s.sid] = counters_by_name(s, self.names)
        for u in out.closed_updates.values():
            for name, n in u.increments.items():
                self.counters[u.sid][name] = self.counters[u.sid].get(name, 0) + n
            span = self.spans[u.sid]
            span.seq = u.seq
            span.first_ms = u.first_ms if u.first_ms is not None else span.first_ms
            span.last_ms = u.last_ms if u.last_ms is not None else span.last_ms
        for user, state in out.states.items():
            if state is None:
                self.states.pop(user, None)
            else:
                self.states[user] = state
        self.names.added.clear()
        for r in out.records:  # the entry's own fields are the record's
            record = orjson.loads(r.data)
            assert (r.user_id, r.session_id) == (record["user_id"], record["session_id"])
            assert record.get("kind", "message") == r.kind
            self.outputs.append(record | {"kind": r.kind})
        self.counts.add(out.counts)

    def tag(self, events: list[Accepted]) -> Outcome:
        history = self.history(needs_history(events, self.states, LIMITS))
        known = {e.record_id for e in events} & self.dedup  # what the commit would refuse
        out = tag(events, self.states, history, self.names, LIMITS, NOW, known)
        self.commit(out)
        self.dedup |= set(out.fresh)
        return out


# Timelines that meet the rarer rules in every example: a session rolled at max duration,
# a late event whose session is the 4th most recent of its user, a roll at exactly the
# max duration, and a late event into a session closed earlier in the same batch (after
# its last event, so only the figures of that batch place it).
WITNESSES = [
    [0, 50_000, 100_000, 140_000, 160_000, 400_000, 600_000, 800_000, 170_000],
    [0, 40_000, 80_000, 120_000, 150_000],
    [0, 50_000, 100_000, 250_000, 155_000],
]
MODALITIES, SOURCES = ["gesture", "audio", ""], ["cam", "mic", ""]


gaps_ms = st.one_of(
    st.integers(0, 5_000),
    st.integers(TIMEOUT_MS - 2, TIMEOUT_MS + 2),
    st.integers(TIMEOUT_MS, TIMEOUT_MS * 4),
    st.integers(-TIMEOUT_MS * 8, -1),  # late, as far back as several sessions
)


# Mutation testing runs this test once per mutant: RULES_EXAMPLES=200 keeps that short
# (the witness timelines reach the rare rules in every example whatever the count).
@settings(max_examples=int(os.environ.get("RULES_EXAMPLES", "2000")), deadline=None)
@given(
    timelines=st.lists(st.lists(gaps_ms, min_size=1, max_size=30), min_size=1, max_size=4),
    seed=st.integers(0, 2**32),
    batch_size=st.sampled_from([1, 2, 7, 500]),
)
def test_rules_match_the_reference_model(
    timelines: list[list[int]], seed: int, batch_size: int
) -> None:
    per_user = [[T0 + t for t in w] for w in WITNESSES]
    for gaps in timelines:
        ts, times = T0, []
        for gap in gaps:
            ts += gap
            times.append(ts)
        per_user.append(times)
    rng = random.Random(seed)
    lanes = [n for n, times in enumerate(per_user) for _ in times]
    rng.shuffle(lanes)
    cursors = [iter(times) for times in per_user]
    stream = [
        accepted(f"user{n}", next(cursors[n]), i, modality=rng.choice(MODALITIES),
                 source=rng.choice(SOURCES), upstream=rng.choice(["", "", "sess_theirs"]))
        for i, n in enumerate(lanes)
    ]  # fmt: skip
    for _ in range(3):  # a publisher's retries: the same record again, later
        e = rng.choice(stream)
        again = accepted(e.user_id, e.ts_ms, len(stream), e.record_id)
        stream.insert(rng.randint(stream.index(e) + 1, len(stream)), again)

    partition = Partition()
    for i in range(0, len(stream), batch_size):
        partition.tag(stream[i : i + batch_size])

    reached: dict[str, int] = {}
    by_record: dict[str, Accepted] = {}
    for e in stream:
        by_record.setdefault(e.record_id, e)  # a duplicate counts as never sent
    first_sent = list(by_record.values())
    expected = reference_partition(
        ((e.user_id, e.ts_ms, e.record_id) for e in first_sent), TIMEOUT_MS, MAX_SESSION_MS,
        reached,
    )  # fmt: skip
    assert reached.get("max_duration", 0) >= 2 and reached["late_depth"] >= 4
    messages = [e for e in partition.outputs if e["kind"] == "message"]
    assert observed_partition(messages) == expected
    assert sorted(e["record_id"] for e in messages) == sorted(e.record_id for e in first_sent)
    check_bracketing(partition.outputs)
    check_boundaries(partition.outputs, by_record)
    check_counters(partition, messages, by_record)
    ends = [r for r in partition.outputs if r["kind"] == "session.end"]
    counts = partition.counts
    assert (counts.tagged, counts.duplicates) == (len(messages), len(stream) - len(first_sent))
    assert counts.late == sum(1 for m in messages if m.get("late"))
    assert counts.upstream_mismatch == sum(1 for m in messages if "upstream_session_id" in m)
    assert counts.upstream_mismatch == sum(1 for e in first_sent if e.upstream_session_id)
    assert counts.opened == len(ends) + len(partition.states) and counts.closed == len(ends)
    assert counts.closed_max_duration == sum(r["close_reason"] == "max_duration" for r in ends)


def check_boundaries(outputs: list[dict[str, Any]], sent: dict[str, Accepted]) -> None:
    """Each session opens with its first event's derived id and closes at its last event
    (late ones aside), for the reason the gap gives; the tagger decides, as "system"."""
    last: dict[str, int] = {}
    for n, r in enumerate(outputs):
        if r["kind"] == "message" and not r.get("late"):
            last[r["session_id"]] = max(last.get(r["session_id"], r["ts"]), r["ts"])
        elif r["kind"] == "session.start":
            opener = outputs[n + 1]
            assert r["performer_id"] == "system" and opener["session_id"] == r["session_id"]
            assert r["session_id"] == new_sid(r["user_id"], opener["record_id"])
        elif r["kind"] == "session.end":
            sid, nxt = r["session_id"], outputs[n + 2]  # end, the next start, its opener
            assert r["performer_id"] == "system"
            assert r["end_time"] == iso_ms(last[sid])
            before_end = [m["ts"] for m in outputs[:n] if m.get("session_id") == sid
                          and m["kind"] == "message"]  # fmt: skip
            assert r["first_event_time"] == iso_ms(min(before_end))
            gap = sent[nxt["record_id"]].ts_ms - last[sid]
            assert r["close_reason"] == ("timeout" if gap > TIMEOUT_MS else "max_duration")


def check_counters(
    partition: Partition, messages: list[dict[str, Any]], sent: dict[str, Accepted]
) -> None:
    """Every session's registry counters are what its messages say."""
    expected: dict[str, dict[str, int]] = {}
    for m in messages:
        e, counts = sent[m["record_id"]], expected.setdefault(m["session_id"], {})
        for name in ("late_events" if m.get("late") else "", e.modality and "modality:" +
                     e.modality, e.source and "source:" + e.source):  # fmt: skip
            if name:
                counts[name] = counts.get(name, 0) + 1
    actual = dict(partition.counters)
    for state in partition.states.values():
        actual[state.sid] = counters_by_name(state, partition.names)
        own = [m["ts"] for m in messages if m["session_id"] == state.sid]
        assert (state.seq, state.first_ms, state.last_ms) == (len(own), min(own), max(own))
    assert {sid: c for sid, c in actual.items() if c} == {s: c for s, c in expected.items() if c}


def test_a_duplicate_is_acked_not_tagged() -> None:
    p = Partition()
    first = accepted("ana", T0, 1)
    out = p.tag([first, accepted("ana", T0 + 1, 2, record_id=first.record_id)])
    assert (out.counts.tagged, out.counts.duplicates) == (1, 1)
    assert out.acked == [b"2-0", b"3-0"] and out.fresh == [first.record_id]
    known = tag(
        [accepted("ana", T0 + 2, 3)],
        p.states,
        {},
        p.names,
        LIMITS,
        NOW,
        {str(uuid.UUID(int=3, version=4))},
    )
    assert known.counts.duplicates == 1 and not known.records


def test_the_rules_leave_the_callers_states_as_they_were() -> None:
    p = Partition()
    p.tag([accepted("ana", T0, 1)])
    before = encode_state(p.states["ana"])
    tag([accepted("ana", T0 + 1, 2)], p.states, {}, p.names, LIMITS, NOW)
    assert encode_state(p.states["ana"]) == before


def test_a_timeout_rolls_the_session_and_the_records_bracket_it() -> None:
    p = Partition()
    out = p.tag([accepted("ana", T0, 1), accepted("ana", T0 + TIMEOUT_MS + 1, 2)])
    kinds = [r.kind for r in out.records]
    assert kinds == ["session.start", "message", "session.end", "session.start", "message"]
    end = orjson.loads(out.records[2].data)
    assert end["close_reason"] == "timeout" and end["event_count"] == 1
    assert end["end_time"] == "2025-06-15T15:06:40.000Z"  # the last event's time
    assert out.counts.closed == 1 and out.counts.opened == 2


def test_upstream_session_id_is_kept_beside_ours() -> None:
    p = Partition()
    out = p.tag([accepted("ana", T0, 1, upstream="sess_theirs")])
    message = orjson.loads(out.records[1].data)
    assert message["upstream_session_id"] == "sess_theirs"
    assert message["session_id"].startswith("sess_") and message["session_seq"] == 1
    assert out.counts.upstream_mismatch == 1


def request(action: str, user: str = "ana", **kw: object) -> ControlRequest:
    values: dict[str, object] = {"request_id": str(uuid.uuid4()), "user_id": user,
                                 "performer_id": "carer01", "ts_ms": T0}  # fmt: skip
    return ControlRequest(action=action, **(values | kw))  # type: ignore[arg-type]


def test_start_is_idempotent_and_supersede_closes_the_active_one() -> None:
    p = Partition()
    meta = {"session_notes": "with carer", "is_training_data": True,
            "training_intent_label": "help"}  # fmt: skip
    out, reply = control(request("start", meta=meta), p.states, None, p.names, LIMITS, NOW)
    p.commit(out)
    assert reply[0] == "ok" and reply[2] == "started"
    start = orjson.loads(out.records[0].data)
    assert (start["session_notes"], start["training_intent_label"]) == ("with carer", "help")
    again, reply2 = control(request("start"), p.states, None, p.names, LIMITS, NOW)
    assert reply2 == ("ok", reply[1], "already_active") and not again.records
    out3, reply3 = control(request("start", supersede=True), p.states, None, p.names, LIMITS, NOW)
    assert reply3[2] == "superseded" and reply3[1] != reply[1]
    end = orjson.loads(out3.records[0].data)
    assert end["close_reason"] == "superseded" and end["session_notes"] == "with carer"


def test_end_refuses_unknown_foreign_and_closed_sessions_and_changes_nothing() -> None:
    p = Partition()
    out, (_, sid, _) = control(request("start"), p.states, None, p.names, LIMITS, NOW)
    p.commit(out)
    cases = [
        (None, "not_found"),
        (("ben", "active"), "forbidden"),
        (("ana", "closed"), "already_closed"),
    ]
    for registry, reason in cases:
        refused, reply = control(
            request("end", session_id=sid), p.states, registry, p.names, LIMITS, NOW
        )
        assert reply == ("error", sid, reason) and refused == Outcome()
    ended, reply = control(
        request("end", session_id=sid), p.states, ("ana", "active"), p.names, LIMITS, NOW
    )
    assert reply == ("ok", sid, "ended") and ended.states == {"ana": None}


def test_sweep_closes_only_sessions_past_their_deadline() -> None:
    p = Partition()
    p.tag([accepted("ana", T0 - 5, 0), accepted("ana", T0, 1)])
    deadline = p.states["ana"].deadline_ms
    assert deadline == NOW + TIMEOUT_MS
    early = sweep(p.states, ["ana"], p.names, LIMITS, deadline - 1)
    assert not early.closed
    due = sweep(p.states, ["ana"], p.names, LIMITS, deadline)
    ((user, _state, reason, performer, end_ms),) = due.closed
    assert (user, reason, performer, end_ms) == ("ana", "timeout", "system", T0)  # last event
    assert sweep({}, ["ana"], p.names, LIMITS, deadline) == Outcome()  # none active: nothing


def test_state_round_trips_and_every_earlier_version_decodes() -> None:
    s = SessionState("sess_00000000000000aa", T0, T0 + 5, 3, T0 - 1, NOW, {1: 2, 7: 1},
                     {"session_notes": "n"})  # fmt: skip
    assert decode_state(encode_state(s)) == s
    assert len(encode_state(s)) > 64  # the active hash stays a hashtable (see state.py)
    text = decode_state(f"{s.sid} {T0} {T0 + 5} 3 {T0 - 1}".encode(), deadline_ms=NOW)
    assert (text.sid, text.start_ms, text.last_ms, text.seq, text.first_ms) == (
        s.sid, T0, T0 + 5, 3, T0 - 1,
    )  # fmt: skip
    v3 = struct.pack("<BddddBH", 3, T0, T0 + 5, 3, T0 - 1, len(s.sid), 2) + s.sid.encode()
    v3 += struct.pack("<HdHd", 1, 2, 7, 1)
    got = decode_state(v3.ljust(72), deadline_ms=NOW)
    assert got == SessionState(s.sid, T0, T0 + 5, 3, T0 - 1, NOW, {1: 2, 7: 1})
    v2 = struct.pack("<BddddBH", 2, T0, T0 + 5, 3, T0 - 1, len(s.sid), 1) + s.sid.encode()
    v2 += struct.pack("<d", 4) + b"source:cam\n"
    old = decode_state(v2.ljust(72))
    assert (old.sid, old.start_ms, old.seq, old.counts) == (s.sid, T0, 3, {})
    names = CounterNames()
    number_named(old, names)
    assert counters_by_name(old, names) == {"source:cam": 4}


def test_counter_names_past_the_last_number_count_together() -> None:
    names = CounterNames(last=65533)
    a, b, c = names.number("source:a"), names.number("source:b"), names.number("source:c")
    assert a == 65534 and b == c == 65535 and names.name(b) == OVERFLOW
    assert "source:b" not in names.hash_fields() and names.hash_fields()["#last"] == 65536
    names.forget_added()
    assert names.last == 65533 and "source:a" not in names.numbers


def late_into(spans: list[Span], active: SessionState, ts: int) -> str:
    """The session_id a late event at `ts` gets, given the user's sessions (newest first)."""
    names = CounterNames()
    out = tag([accepted("ana", ts, 99)], {"ana": active}, {"ana": spans}, names, LIMITS, NOW)
    return str(orjson.loads(out.records[0].data)["session_id"])


def test_a_late_event_measures_a_session_without_events_from_its_start() -> None:
    # Sessions a caregiver started before any event: a span is [start, start], however
    # the registry marks its missing events (-1), and a first event after the start does
    # not narrow it.
    active = SessionState("sess_c", T0 + 10 * TIMEOUT_MS, T0 + 10 * TIMEOUT_MS, 1,
                          T0 + 10 * TIMEOUT_MS, NOW)  # fmt: skip
    empty = Span("sess_b", T0, -1, -1, 0)  # closed without events
    older = Span("sess_a", T0 - 3 * TIMEOUT_MS, T0 - 3 * TIMEOUT_MS, T0 - 3 * TIMEOUT_MS, 1)
    assert late_into([Span("sess_c", active.start_ms, -1, -1, 0), empty, older], active,
                     T0 + TIMEOUT_MS // 2) == "sess_b"  # fmt: skip
    first_later = Span("sess_b", T0, T0 + 2 * TIMEOUT_MS, T0 + 2 * TIMEOUT_MS, 1)
    nearer = Span("sess_a", T0 - 2 * TIMEOUT_MS, T0 - 2 * TIMEOUT_MS, T0 - 2 * TIMEOUT_MS, 1)
    assert late_into([Span("sess_c", active.start_ms, -1, -1, 0), first_later, nearer], active,
                     T0 - TIMEOUT_MS // 2) == "sess_b"  # fmt: skip


def test_a_late_event_between_two_equally_near_sessions_joins_the_more_recent() -> None:
    active = SessionState("sess_c", T0 + 20 * TIMEOUT_MS, T0 + 20 * TIMEOUT_MS, 1,
                          T0 + 20 * TIMEOUT_MS, NOW)  # fmt: skip
    spans = [Span("sess_c", active.start_ms, -1, -1, 0),
             Span("sess_b", T0 + 10 * TIMEOUT_MS, T0 + 10 * TIMEOUT_MS, T0 + 10 * TIMEOUT_MS, 1),
             Span("sess_a", T0, T0, T0, 1)]  # fmt: skip
    assert late_into(spans, active, T0 + 5 * TIMEOUT_MS) == "sess_b"


def test_a_late_event_into_a_closed_session_updates_its_registry_figures() -> None:
    p = Partition()
    p.tag([accepted("ana", T0, 1), accepted("ana", T0 + 1000, 2)])
    p.tag([accepted("ana", T0 + 10 * TIMEOUT_MS, 3)])  # rolls: the first session closes
    out = p.tag([accepted("ana", T0 - 500, 4, modality="audio", source="mic")])
    ((sid, update),) = out.closed_updates.items()
    assert (update.sid, update.seq, update.first_ms, update.last_ms) == (sid, 3, T0 - 500, None)
    assert update.increments == {"late_events": 1, "modality:audio": 1, "source:mic": 1}
    assert orjson.loads(out.records[0].data)["session_seq"] == 3
    again = p.tag([accepted("ana", T0 + 2000, 5)])  # later than its last event
    assert again.closed_updates[sid].last_ms == T0 + 2000 and again.closed_updates[sid].seq == 4


def test_an_end_for_a_session_the_registry_calls_active_but_no_state_holds_is_refused() -> None:
    refused, reply = control(request("end", session_id="sess_x"), {}, ("ana", "active"),
                             CounterNames(), LIMITS, NOW)  # fmt: skip
    assert reply == ("error", "sess_x", "already_closed") and refused == Outcome()


def test_a_started_session_id_is_derived_from_the_user_and_the_request() -> None:
    start = request("start")
    out, (_, sid, _) = control(start, {}, None, CounterNames(), LIMITS, NOW)
    assert sid == new_sid("ana", start.request_id) == out.opened[0].sid
    assert new_sid("ana", "r1") != new_sid("ben", "r1")


def test_counters_of_both_kinds_add_up_and_new_names_reach_the_hash() -> None:
    names = CounterNames()
    s = SessionState("sess_a", T0, T0, 2, T0, NOW, named={"source:cam": 2})
    s.counts[names.number("source:cam")] = 3
    assert counters_by_name(s, names) == {"source:cam": 5}
    assert names.hash_fields() == {"source:cam": 1, "#1": "source:cam", "#last": 1}
    number_named(s, names)
    assert s.counts == {1: 5} and not s.named


def test_a_state_of_a_newer_release_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match="newer release"):
        decode_state(b'{"v":5,"sid":"sess_a"}')


def test_a_late_event_measures_the_active_session_by_its_own_figures() -> None:
    # The registry holds an active session's start only; its figures live in its state:
    # an earlier late join moved its first event before its start.
    active = SessionState("sess_c", T0, T0 + 1000, 3, T0 - 50_000, NOW)
    spans = [
        Span("sess_c", T0, -1, -1, 0),
        Span("sess_b", T0 - 3 * TIMEOUT_MS, T0 - 3 * TIMEOUT_MS, T0 - 3 * TIMEOUT_MS, 1),
    ]
    assert late_into(spans, active, T0 - 50_000 - TIMEOUT_MS // 2) == "sess_c"


def test_with_no_active_session_the_latest_one_decides_what_is_late() -> None:
    # (A caregiver ended it, or the sweeper closed it.) Before its start: late, joins it;
    # after: a new session.
    spans = [Span("sess_b", T0, T0, T0 + 1000, 2), Span("sess_a", T0 - 10 * TIMEOUT_MS,
             T0 - 10 * TIMEOUT_MS, T0 - 10 * TIMEOUT_MS, 1)]  # fmt: skip
    names = CounterNames()
    early = tag([accepted("ana", T0 - 1000, 1)], {}, {"ana": spans}, names, LIMITS, NOW)
    assert early.counts.late == 1 and early.closed_updates["sess_b"].seq == 3
    after = tag([accepted("ana", T0 + 2000, 2)], {}, {"ana": spans}, names, LIMITS, NOW)
    assert after.counts.late == 0 and after.counts.opened == 1


def test_a_start_request_opens_a_session_with_its_metadata_and_a_deadline() -> None:
    meta = {"session_notes": "n", "is_training_data": True, "training_intent_label": "help"}
    out, (_, sid, _) = control(request("start", meta=meta), {}, None, CounterNames(), LIMITS, NOW)
    (opened,) = out.opened
    assert (opened.user_id, opened.sid, opened.start_ms, opened.performer, opened.meta) == (
        "ana", sid, T0, "carer01", meta,
    )  # fmt: skip
    state = out.states["ana"]
    assert state is not None and state.deadline_ms == NOW + TIMEOUT_MS and state.meta == meta
    assert (state.seq, state.first_ms, state.last_ms) == (0, -1, T0)


def test_a_late_event_at_the_very_edge_of_a_session_s_widened_span_joins_it() -> None:
    active = SessionState("sess_c", T0 + 20 * TIMEOUT_MS, T0 + 20 * TIMEOUT_MS, 1,
                          T0 + 20 * TIMEOUT_MS, NOW)  # fmt: skip
    t = TIMEOUT_MS
    # sess_a's span reaches into sess_b's (a late event stretched its last): at the very
    # edges of sess_b's, the more recent session, sess_b, is the one.
    spans = [Span("sess_c", active.start_ms, -1, -1, 0),
             Span("sess_b", T0 + 10 * t, T0 + 10 * t, T0 + 11 * t, 2),
             Span("sess_a", T0 + 8 * t, T0 + 8 * t, T0 + 23 * t // 2, 3)]  # fmt: skip
    assert late_into(spans, active, T0 + 12 * t) == "sess_b"  # its last + timeout
    assert late_into(spans, active, T0 + 9 * t) == "sess_b"  # its first - timeout
    # Outside every span: the nearest, measured from the end it is nearer to.
    spans[2] = Span("sess_a", T0, T0, T0, 1)
    assert late_into(spans, active, T0 + 13 * t) == "sess_b"
    # A late event that moved a session's first event before its start widens it.
    spans[1] = Span("sess_b", T0 + 10 * t, T0 + 5 * t, T0 + 10 * t, 3)
    assert late_into(spans, active, T0 + 9 * t // 2) == "sess_b"


def test_a_caregiver_started_session_takes_its_first_event_and_ends_at_its_last() -> None:
    p = Partition()
    out, (_, sid, _) = control(request("start"), p.states, None, p.names, LIMITS, NOW)
    p.commit(out)
    p.tag([accepted("ana", T0 - 1000, 1)])  # before its start: late, its first event
    assert (p.states["ana"].first_ms, p.states["ana"].seq) == (T0 - 1000, 1)
    p.tag([accepted("ana", T0 + 5000, 2)])
    rolled = p.tag([accepted("ana", T0 + 5000 + TIMEOUT_MS + 1, 3)])
    end = orjson.loads(rolled.records[0].data)
    assert (end["session_id"], end["end_time"], end["event_count"]) == (
        sid, iso_ms(T0 + 5000), 2,
    )  # fmt: skip
    assert end["first_event_time"] == iso_ms(T0 - 1000)


def test_a_caregiver_started_session_with_one_event_ends_at_that_event() -> None:
    for close in ("roll", "sweep"):
        p = Partition()
        out, _reply = control(request("start"), p.states, None, p.names, LIMITS, NOW)
        p.commit(out)
        p.tag([accepted("ana", T0 + 5000, 1)])
        if close == "roll":
            ended = p.tag([accepted("ana", T0 + 5000 + TIMEOUT_MS + 1, 2)]).closed
        else:
            ended = sweep(p.states, ["ana"], p.names, LIMITS, NOW + TIMEOUT_MS).closed
        ((_user, _state, _reason, _performer, end_ms),) = ended
        assert end_ms == T0 + 5000, close


def test_an_upstream_session_id_that_is_ours_is_not_repeated() -> None:
    p = Partition()
    first = p.tag([accepted("ana", T0, 1)])
    sid = first.records[0].session_id
    again = p.tag([accepted("ana", T0 + 1, 2, upstream=sid)])
    assert "upstream_session_id" not in orjson.loads(again.records[0].data)
    assert again.counts.upstream_mismatch == 0


def test_a_batch_of_only_a_duplicate_still_keeps_the_session_from_going_idle() -> None:
    p = Partition()
    e = accepted("ana", T0, 1)
    p.tag([e])
    later = NOW + 1000
    out = tag([e], p.states, {}, p.names, LIMITS, later, {e.record_id})
    assert out.states["ana"] is not None and out.states["ana"].deadline_ms == later + TIMEOUT_MS
