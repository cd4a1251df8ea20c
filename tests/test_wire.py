"""The canonical JSON encoder: valid JSON, sorted, ASCII, integers only."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.net.wire import encode

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_round_trips_through_json_and_equals_sorted_compact_dumps(value: object) -> None:
    data = encode(value)
    data.decode("ascii")  # pure ASCII
    assert json.loads(data) == value
    assert data == json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize("bad", [1.5, float("nan"), {1: 2}, {"a": {3, 4}}, b"x"])
def test_refuses_what_is_not_integer_json(bad: object) -> None:
    with pytest.raises(ValueError):
        encode(bad)
