"""The intake's shortcut for usual events agrees with the A3CPMessage model: whatever it
accepts, the model accepts with the same values; the rest it leaves to the model."""

import uuid
from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bench.throughput import backlog
from tagger.intake_spine import model_spine, usual_spine
from tests.conftest import event

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
stamps = st.from_regex(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,8})?"
    r"(Z|z|[+-][0-9]{2}:?[0-9]{2})?\n?\Z"
)
scores = st.floats(-0.25, 1.25) | st.floats() | st.integers(-1, 2) | st.booleans() | st.just("0.5")
near = {
    # \u0661, an Arabic-Indic digit: the model's \d takes it, the shortcut's [0-9] not.
    "schema_version": st.from_regex(r"\A[0-9\u0661]{1,3}\.[0-9]{0,2}\.?[0-9]{0,2}\n?\Z"),
    "record_id": st.builds(
        lambda u, f: f(str(u)),
        st.uuids(version=4),
        st.sampled_from(
            [
                str,
                str.upper,
                lambda u: u.replace("-", ""),
                lambda u: "{" + u + "}",
                lambda u: u[:14] + "1" + u[15:],
                lambda u: u[:19] + "c" + u[20:],
                lambda u: u + "\n",
                lambda u: u[:-1],
            ]
        ),
    )
    | st.builds(
        lambda u, n: u[:n] + u[n].upper() + u[n + 1 :],
        st.uuids(version=4).map(str),
        st.integers(0, 35),
    ),
    "user_id": st.from_regex(r"\A[A-Za-z0-9._\-/\u00e9]{0,66}\n?\Z"),
    "timestamp": stamps,
    "modality": st.sampled_from(["gesture", "audio", "speech", "image", "multimodal", "Audio"]),
    "source": st.text(max_size=130),
    "session_id": st.text(max_size=130),
    "performer_id": st.text(max_size=130),
    "classifier_output": st.fixed_dictionaries({"unknown": scores}, optional={"eat": scores})
    | st.dictionaries(st.sampled_from(["unknown", "help"]), scores),
    "context": json_values,
}
# One or two spine fields changed to something near a valid value, or anything at all.
changes = st.lists(st.sampled_from(sorted(near)), min_size=1, max_size=2).flatmap(
    lambda picked: st.fixed_dictionaries(
        {k: st.one_of(near[k], near[k], json_values, st.none()) for k in picked}
    )
)


def agree(e: dict[str, Any]) -> None:
    fast = usual_spine(e)
    try:
        full = model_spine(e)
    except ValidationError:
        assert fast is None, f"the shortcut accepted what the model refuses: {e}"
        return
    assert fast is None or fast == full


@settings(max_examples=1500, deadline=None)
@given(changes=changes, dropped=st.sets(st.sampled_from(sorted(near)), max_size=2))
@example(changes={"timestamp": "0001-01-01T00:00:00+01:00"}, dropped=set())
@example(changes={"timestamp": "2025-06-15T12:34:56.1234567Z"}, dropped=set())
@example(changes={"classifier_output": {"unknown": True}}, dropped=set())
@example(changes={"classifier_output": {"unknown": 1.0000001}}, dropped=set())
@example(changes={"classifier_output": {"unknown": -0.0, "x": 1}}, dropped=set())
def test_the_shortcut_agrees_with_the_model(changes: dict[str, Any], dropped: set[str]) -> None:
    e = {k: v for k, v in {**event(), **changes}.items() if k not in dropped}
    agree(e)


@given(stamp=stamps)
@settings(max_examples=1000, deadline=None)
def test_timestamps_read_as_the_model_reads_them(stamp: str) -> None:
    agree(event(timestamp=stamp))


def test_the_usual_events_take_the_shortcut() -> None:
    for raw in backlog(300, 10):
        e = orjson.loads(raw)
        assert usual_spine(e) == model_spine(e)
    canonical = str(uuid.uuid4())
    assert usual_spine(event(record_id=canonical.upper())) is None  # the model canonicalises
    assert model_spine(event(record_id=canonical.upper()))[1] == canonical
