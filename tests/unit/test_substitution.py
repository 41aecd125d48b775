"""The substitution fast path gives Jinja2's text or gives up (outbox/substitution.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outbox import templates
from outbox.substitution import Substitution
from outbox.templates import TemplateError, TemplateVersion, render

NAMES = ["n", "user", "items", "items_", "keys", "range", "self"]
KEYS = ["name", "id", "items", "get", "0", "city"]

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)
data_strategy = st.dictionaries(st.sampled_from(NAMES), json_values, max_size=4)


@st.composite
def lookups(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(NAMES))
    for _ in range(draw(st.integers(0, 2))):
        text += draw(
            st.sampled_from(
                [f".{k}" for k in KEYS if k.isidentifier()] + ['["name"]', "[0]", "[-1]", "[1]"]
            )
        )
    return "{{ " + text + " }}"


sources = st.lists(
    st.text(alphabet="ab <&>\n", max_size=4) | lookups(), min_size=1, max_size=5
).map("".join)


def _version(body: str, html: str | None = None) -> TemplateVersion:
    return TemplateVersion(
        id=1,
        key="t",
        channel="email",
        locale="default",
        version=1,
        subject=None,
        body=body,
        html_body=html,
        title=None,
        content_hash="h",
    )


def _jinja(source: str, data: dict[str, Any], autoescape: bool) -> str | BaseException:
    env = templates._HTML_ENV if autoescape else templates._TEXT_ENV
    try:
        return env.from_string(source).render(data)
    except Exception as exc:  # noqa: BLE001 - the outcome to compare
        return exc


@settings(max_examples=400, deadline=None)
@given(source=sources, data=data_strategy, autoescape=st.booleans())
def test_same_text_as_jinja_or_gives_up(
    source: str, data: dict[str, Any], autoescape: bool
) -> None:
    env = templates._HTML_ENV if autoescape else templates._TEXT_ENV
    substitution = Substitution.from_ast(env.parse(source), autoescape=autoescape)
    if substitution is None:  # items[-1] (an expression) and self: left to Jinja
        assert "[-1]" in source or "self" in source
        return
    fast = substitution.render(data)
    if fast is not None:
        assert fast == _jinja(source, data, autoescape)


@settings(max_examples=200, deadline=None)
@given(source=sources, data=data_strategy)
def test_render_is_unchanged_by_the_fast_path(source: str, data: dict[str, Any]) -> None:
    """render() with the fast path equals Jinja alone: the text, or a TemplateError."""
    expected = _jinja(source, data, autoescape=False)
    try:
        got: str | BaseException = render(_version(source), data).body
    except TemplateError as exc:
        got = exc
    if isinstance(expected, BaseException):
        assert isinstance(got, TemplateError)
    else:
        assert got == expected


def test_common_shapes_take_the_fast_path() -> None:
    env = templates._TEXT_ENV
    sub = Substitution.from_ast(
        env.parse("Hi {{ user.name }}, order {{ order['id'] }}: {{ items[0] }}\n"), autoescape=False
    )
    assert sub is not None
    data = {"user": {"name": "Ada"}, "order": {"id": 7}, "items": [1.5]}
    assert sub.render(data) == "Hi Ada, order 7: 1.5"
    html = Substitution.from_ast(templates._HTML_ENV.parse("<p>{{ n }}</p>"), autoescape=True)
    assert html is not None and html.render({"n": "<b>&"}) == "<p>&lt;b&gt;&amp;</p>"
    assert html.render({"n": None}) == "<p></p>"


@pytest.mark.parametrize(
    "source",
    [
        "{% if n %}x{% endif %}",
        "{{ n | upper }}",
        "{{ n + 1 }}",
        "{{ 'a' }}",
        "{{ f() }}",
        "{% for i in items %}{{ i }}{% endfor %}",
        "{{ user[key] }}",
        "{{ self }}",
        "{{ self.a }}",  # the template itself in Jinja, whatever the data holds
    ],
)
def test_anything_else_is_left_to_jinja(source: str) -> None:
    assert Substitution.from_ast(templates._TEXT_ENV.parse(source), autoescape=False) is None


@pytest.mark.parametrize(
    ("source", "data"),
    [
        ("{{ missing }}", {}),  # undefined: Jinja raises the error
        ("{{ user.items }}", {"user": {"items": 1}}),  # a dict attribute wins over the key
        ("{{ user.__class__ }}", {"user": {}}),  # the sandbox decides
        ("{{ items }}", {"items": [1, 2]}),  # not a scalar
        ("{{ range }}", {}),  # a Jinja global, not data
        ("{{ d.total }}", {"d": Counter(total=1)}),  # a dict subclass's method
    ],
)
def test_gives_up_where_jinja_may_differ(source: str, data: dict[str, Any]) -> None:
    sub = Substitution.from_ast(templates._TEXT_ENV.parse(source), autoescape=False)
    assert sub is not None and sub.render(data) is None
