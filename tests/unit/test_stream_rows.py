"""enqueue_stream's staging rows: the plain-item path agrees with the general checks.

``calls._plain_stream_row`` builds the row of a common item without the general
checks' work and hands every other item to ``calls._item_params``. Whatever it
answers must be what the general path answers for that item; what it hands over
is checked (and refused, with the general message) there.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outbox import calls, errors


def general_row(i: int, item: Any) -> tuple[Any, ...]:
    params = calls._item_params(i, item)
    return (i, *(params[name] for name in calls.STREAM_COLUMNS))


def agrees(i: int, item: Any) -> tuple[Any, ...] | None:
    """The plain path's answer, checked against the general one's."""
    row = calls._plain_stream_row(i, item)
    if row is not None:
        assert row == general_row(i, item)
    return row


class Text(str):
    pass


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
)
texts = st.text(max_size=12)
items = st.fixed_dictionaries(
    {"message_id": texts, "template": texts},
    optional={
        "recipient": st.one_of(st.none(), texts),
        "address": st.one_of(st.none(), texts),
        "category": st.one_of(st.none(), texts),
        "data": st.one_of(
            st.none(),
            st.dictionaries(texts, json_scalars, max_size=4),
            st.dictionaries(texts, st.lists(json_scalars, max_size=2), max_size=2),
        ),
        "priority": st.integers(-101, 101),
        "channels": st.one_of(st.none(), st.just("email")),
    },
)


@given(st.integers(0, 10**6), items)
def test_plain_rows_are_the_general_rows(i: int, item: dict[str, Any]) -> None:
    try:
        general_row(i, item)
    except errors.ValidationError:
        # Refused by the general checks: the plain path must not accept it.
        assert calls._plain_stream_row(i, item) is None
    else:
        agrees(i, item)


def test_a_common_item_takes_the_plain_path() -> None:
    item = {"message_id": "m-1", "template": "t", "address": "a@example.com", "data": {"n": 1}}
    assert agrees(7, item) == (
        7,
        "m-1",
        "t",
        None,
        '{"n": 1}',
        None,
        "a@example.com",
        None,
        0,
        None,
        None,
    )
    assert agrees(0, {"message_id": "m", "template": "t", "recipient": "u"}) is not None


@pytest.mark.parametrize(
    "item",
    [
        {"message_id": "m", "template": "t", "address": "a@é.com"},  # not ASCII
        {"message_id": "m\x00", "template": "t"},  # NUL
        {"message_id": Text("m"), "template": "t"},  # a str subclass
        {"message_id": "m", "template": "t", "data": {"a": {"b": 1}}},  # nested
        {"message_id": "m", "template": "t", "data": {"a": math.nan}},
        {"message_id": "m", "template": "t", "data": {1: "a"}},  # a non-str key
        {"message_id": "m", "template": "t", "data": {"a": 10**5000}},
        {"message_id": "m", "template": "t", "data": {"a": "x" * calls.MAX_DATA_BYTES}},
        {"message_id": "m", "template": "t", "data": OrderedDict(a=1)},
        {"message_id": "m", "template": "t", "priority": 3},
        {"message_id": "m", "template": "t", "channels": "email"},
        {"message_id": "m", "template": "t", "prio": 3},  # unknown key
        {"message_id": "m"},  # no template
        OrderedDict(message_id="m", template="t"),
    ],
)
def test_other_items_go_to_the_general_checks(item: Any) -> None:
    assert calls._plain_stream_row(0, item) is None
