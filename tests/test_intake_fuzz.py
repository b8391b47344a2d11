"""Fuzz the parse-and-validate path: every input ends as an event or a dead letter."""

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tagger.intake import Accepted, Rejected, check_entry
from tests.conftest import event

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(fields=st.dictionaries(st.binary(max_size=8), st.binary(max_size=200), max_size=4))
def test_any_entry_fields(fields: dict[bytes, bytes]) -> None:
    assert isinstance(check_entry(b"1-0", fields), Accepted | Rejected)


@settings(max_examples=400, deadline=None)
@given(raw=st.binary(max_size=300), wrapped=st.booleans())
def test_any_payload_bytes(raw: bytes, wrapped: bool) -> None:
    fields = {b"__data__" if wrapped else b"data": raw}
    assert isinstance(check_entry(b"1-0", fields), Accepted | Rejected)


@settings(max_examples=400, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(sorted(event())) | st.text(), json_values))
def test_any_change_to_a_valid_event(changes: dict[str, object]) -> None:
    result = check_entry(b"1-0", {b"data": orjson.dumps({**event(), **changes})})
    assert isinstance(result, Accepted | Rejected)
    if isinstance(result, Accepted):  # what passes can be tagged: the head is an object
        assert isinstance(orjson.loads(result.head + b',"x":1}'), dict)
