"""Hypothesis: any interleaving of users' timelines gives the reference model's sessions."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from tests.conftest import SettingsFactory, event, output, publish, run_burst, tagged
from tests.reference import check_bracketing, observed_partition, reference_partition

TIMEOUT_S, MAX_SESSION_S = 60, 600

# Gaps straddle both limits, including exactly the timeout; some are negative
# (a late event, earlier than one already seen).
gaps_ms = st.one_of(
    st.integers(0, 5_000),
    st.integers(TIMEOUT_S * 1000 - 2, TIMEOUT_S * 1000 + 2),
    st.integers(TIMEOUT_S * 1000, TIMEOUT_S * 4000),
    st.integers(-TIMEOUT_S * 2000, -1),
)
timeline = st.lists(gaps_ms, min_size=1, max_size=40)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    timelines=st.lists(timeline, min_size=1, max_size=4),
    shuffle_seed=st.integers(0, 2**32),
    batch_size=st.sampled_from([1, 3, 500]),
)
def test_boundaries_match_reference_model(
    client: Redis,
    make_settings: SettingsFactory,
    timelines: list[list[int]],
    shuffle_seed: int,
    batch_size: int,
) -> None:
    cfg = make_settings(
        session_timeout_s=TIMEOUT_S, max_session_s=MAX_SESSION_S, batch_size=batch_size
    )
    per_user = []  # each user's (ts_ms, event) in publishing order
    for n, gaps in enumerate(timelines):
        ts, events = 1_750_000_000_000, []
        for gap in gaps:
            ts += gap
            events.append((ts, event(f"user{n}", ts)))
        per_user.append(events)
    # Interleave users at random while keeping each user's own order.
    rng = random.Random(shuffle_seed)
    lanes = [n for n, events in enumerate(per_user) for _ in events]
    rng.shuffle(lanes)
    cursors = [iter(events) for events in per_user]
    stream = [next(cursors[n]) for n in lanes]

    publish(client, cfg, [e for _ts, e in stream])
    run_burst(cfg)

    expected = reference_partition(
        ((str(e["user_id"]), ts, str(e["record_id"])) for ts, e in stream),
        TIMEOUT_S * 1000,
        MAX_SESSION_S * 1000,
    )
    assert observed_partition(tagged(client, cfg)) == expected
    check_bracketing(output(client, cfg))
