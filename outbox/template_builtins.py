"""Jinja's built-ins that can build large values, each checked against outbox/template_limits.py.

The str and bytes methods a template can call (``'x'.ljust(n)``, ``s.join(...)``,
``s.replace(...)``...), Jinja's filters (``center``, ``indent``, ``format``,
``join``, ``tojson``...) and the ``lipsum`` global: each is checked before it
builds its result, and what it builds is counted (``produced``). The sandbox
in outbox/templates.py installs them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from itertools import chain
from typing import Any

from jinja2.exceptions import FilterArgumentError
from jinja2.filters import FILTERS, make_attrgetter
from jinja2.utils import generate_lorem_ipsum
from markupsafe import soft_str

from outbox.template_limits import (
    LOOP_FILTER,
    MAX_ITEMS,
    MAX_VALUE_CHARS,
    UNCOUNTED_CHARS,
    LimitExceeded,
    checked_str,
    guard_loop,
    parse_percent,
    percent_size,
    produced,
    size_error,
    text_size,
)

# --- calls: str and bytes methods that can build large values --------------------------------


def _check_width(width: Any, what: str) -> None:
    if isinstance(width, int) and width > MAX_VALUE_CHARS:
        raise size_error(what)


def _padded(name: str) -> Callable[..., Any]:
    def call(owner: Any, width: Any = 0, *args: Any, **kwargs: Any) -> Any:
        _check_width(width, f"{name}()")
        return getattr(owner, name)(width, *args, **kwargs)

    return call


def _expandtabs(owner: Any, tabsize: Any = 8, **kwargs: Any) -> Any:
    tabs = owner.count("\t" if isinstance(owner, str) else b"\t")
    if isinstance(tabsize, int) and len(owner) + tabs * tabsize > MAX_VALUE_CHARS:
        raise size_error("expandtabs()")
    return owner.expandtabs(tabsize, **kwargs)


def _join(owner: Any, items: Any) -> Any:
    items = list(items)
    size = sum(len(i) if isinstance(i, str | bytes) else 0 for i in items)
    if size + len(owner) * max(len(items) - 1, 0) > MAX_VALUE_CHARS:
        raise size_error("join()")
    return owner.join(items)


def _replace(owner: Any, old: Any, new: Any, count: Any = -1) -> Any:
    if isinstance(old, str | bytes) and isinstance(new, str | bytes):
        times = owner.count(old) if old else len(owner) + 1
        if isinstance(count, int) and count >= 0:
            times = min(times, count)
        if len(owner) + times * max(len(new) - len(old), 0) > MAX_VALUE_CHARS:
            raise size_error("replace()")
    return owner.replace(old, new, count)


def _translate(owner: Any, table: Any) -> Any:
    values = table.values() if isinstance(table, Mapping) else table
    if not isinstance(values, str | bytes):
        longest = max((len(v) for v in values if isinstance(v, str | bytes)), default=1)
        if len(owner) * longest > MAX_VALUE_CHARS:
            raise size_error("translate()")
    return owner.translate(table)


_METHODS: dict[str, Callable[..., Any]] = {
    "center": _padded("center"),
    "ljust": _padded("ljust"),
    "rjust": _padded("rjust"),
    "zfill": _padded("zfill"),
    "expandtabs": _expandtabs,
    "join": _join,
    "replace": _replace,
    "translate": _translate,
}


def method_call(func: Any) -> Callable[..., Any] | None:
    """The checked version of a str/bytes method that can amplify, else None."""
    owner = getattr(func, "__self__", None)
    if isinstance(owner, str | bytes):
        checked = _METHODS.get(func.__name__)
        return functools.partial(checked, owner) if checked else None
    if type(owner) is int and func.__name__ == "to_bytes":
        return functools.partial(_to_bytes, owner)
    return None


def _to_bytes(owner: int, length: Any = 1, *args: Any, **kwargs: Any) -> bytes:
    _check_width(length, "to_bytes()")
    return owner.to_bytes(length, *args, **kwargs)


# --- filters ----------------------------------------------------------------------------------

# Filters that turn their value into text (a container's repr, if given one).
_TEXTUAL = frozenset(
    {
        "capitalize",
        "e",
        "escape",
        "filesizeformat",
        "forceescape",
        "lower",
        "safe",
        "string",
        "striptags",
        "title",
        "trim",
        "truncate",
        "upper",
        "urlencode",
        "wordcount",
        "xmlattr",
    }
)


def _center(value: Any, width: Any = 80) -> Any:
    text_size(value)
    _check_width(width, "center")
    return FILTERS["center"](value, width)


def _indent(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> Any:
    size = text_size(s)
    text = s if isinstance(s, str) else soft_str(s)
    lines = 1 + sum(text.count(c) for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
    step = len(width) if isinstance(width, str) else width
    if isinstance(step, int) and size + lines * step > MAX_VALUE_CHARS:
        raise size_error("indent")
    return FILTERS["indent"](s, width, first, blank)


def _format(value: Any, *args: Any, **kwargs: Any) -> Any:
    """Jinja's ``format`` filter, checked first. ``"%.2f"|format(price)`` is everywhere:
    the format string's parse is cached, and a format that only prints numbers with
    literal widths needs nothing more (registered as it is, no wrapper)."""
    if args and kwargs:
        raise FilterArgumentError("can't handle positional and keyword arguments at the same time")
    text = value if type(value) is str else checked_str(value)
    fixed, directives = parse_percent(text)
    if directives:
        percent_size(text, kwargs or args)
    elif fixed <= UNCOUNTED_CHARS:
        return text % (kwargs or args)
    return produced(text % (kwargs or args))


def _join_filter(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
    items = list(value)
    if attribute is not None:
        getter = make_attrgetter(eval_ctx.environment, attribute)
        items = [getter(item) for item in items]
    size = len(d) * max(len(items) - 1, 0)
    for item in items:
        size += len(item) if type(item) is str else text_size(item)
        if size > MAX_VALUE_CHARS:
            raise size_error("join")
    return FILTERS["join"](eval_ctx, items, d)


def _replace_filter(eval_ctx: Any, s: Any, old: str, new: str, count: Any = None) -> Any:
    _replace(checked_str(s), old, new, -1 if count is None else count)
    return FILTERS["replace"](eval_ctx, s, old, new, count)


def _words(text: str) -> int:
    return 1 + sum(text.count(c) for c in " \t\n\r\x0b\x0c")


def _wordwrap(environment: Any, s: Any, width: Any = 79, *args: Any, **kwargs: Any) -> Any:
    wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else None)
    text = checked_str(s)
    # A line holds at least one word, or (long words broken) width characters.
    breaks = _words(text) + (len(text) // width if isinstance(width, int) and width > 0 else 0)
    wrap = wrapstring if isinstance(wrapstring, str) else environment.newline_sequence
    if len(text) + breaks * len(wrap) > MAX_VALUE_CHARS:
        raise size_error("wordwrap")
    return FILTERS["wordwrap"](environment, s, width, *args, **kwargs)


def _urlize(eval_ctx: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
    text = checked_str(value)
    words = _words(text)
    extra = sum(len(v) for v in chain(args, kwargs.values()) if isinstance(v, str))
    if 3 * len(text) + words * (extra + 64) > MAX_VALUE_CHARS:
        raise size_error("urlize")
    return FILTERS["urlize"](eval_ctx, value, *args, **kwargs)


def _batch(value: Any, linecount: Any, fill_with: Any = None) -> Any:
    if fill_with is not None and isinstance(linecount, int) and linecount > MAX_ITEMS:
        raise LimitExceeded(f"batch fill over the limit of {MAX_ITEMS:,} items")
    return FILTERS["batch"](value, linecount, fill_with)


def _slice(eval_ctx: Any, value: Any, slices: Any, fill_with: Any = None) -> Any:
    if isinstance(slices, int) and slices > MAX_ITEMS:
        raise LimitExceeded(f"slice into more parts than the limit of {MAX_ITEMS:,}")
    return FILTERS["slice"](eval_ctx, value, slices, fill_with)


def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    if not isinstance(start, int | float):
        # Adding lists or strings one by one is quadratic; templates only add numbers.
        raise LimitExceeded("sum only adds numbers")
    return FILTERS["sum"](environment, iterable, attribute, start)


def _tojson(eval_ctx: Any, value: Any, indent: Any = None) -> Any:
    step = len(indent) if isinstance(indent, str) else indent
    if step is not None and not (isinstance(step, int) and 0 <= step <= 16):
        raise LimitExceeded("tojson indent over the limit of 16")
    text_size(value, nested=6 * (step or 0))
    return FILTERS["tojson"](eval_ctx, value, indent)


def _pprint(value: Any) -> Any:
    # pprint indents nested values by the length of their keys: only small values.
    if text_size(value) > 4096:
        raise LimitExceeded("pprint of a value over the limit of 4,096 characters")
    return FILTERS["pprint"](value)


# Each takes the arguments Jinja's filter of that name takes (what Jinja passes first
# included: an eval context or the environment), checks them, and calls it.
_CHECKED: dict[str, Callable[..., Any]] = {
    "batch": _batch,
    "center": _center,
    "indent": _indent,
    "join": _join_filter,
    "pprint": _pprint,
    "replace": _replace_filter,
    "slice": _slice,
    "sum": _sum,
    "tojson": _tojson,
    "urlize": _urlize,
    "wordwrap": _wordwrap,
}


# Filters that build no new text or list and take constant time (they count, convert
# a number, or return one of their arguments): left as they are.
_UNCHECKED = frozenset(
    {
        "abs",
        "attr",
        "count",
        "d",
        "default",
        "first",
        "float",
        "int",
        "length",
        "random",
        "round",
    }
)


def _guarded(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func``, checked first if it can amplify, its result counted (:func:`produced`).

    Ordinary templates call filters all the time: the wrapper does only that. It
    counts no step: straight-line code is bounded by the source's size, loops count
    their own steps, and so do the iterators ``map`` and ``select`` return.
    """
    call = _CHECKED.get(name, func)
    # The value filtered is the first argument, after what Jinja passes first.
    first = 1 if hasattr(func, "jinja_pass_arg") else 0

    if name not in _TEXTUAL:

        def guarded(*args: Any, **kwargs: Any) -> Any:
            value = call(*args, **kwargs)
            if type(value) is str and len(value) <= UNCOUNTED_CHARS:
                return value
            return produced(value)

        return functools.update_wrapper(guarded, func)

    def textual(*args: Any, **kwargs: Any) -> Any:
        # A container becomes its repr: not one over the size limit.
        if len(args) > first and type(args[first]) is not str:
            text_size(args[first])
        value = call(*args, **kwargs)
        if type(value) is str and len(value) <= UNCOUNTED_CHARS:
            return value
        return produced(value)

    return functools.update_wrapper(textual, func)


def guarded_filters() -> dict[str, Callable[..., Any]]:
    """Jinja's built-in filters, checked where they can amplify, counting what they
    build; plus the loop guard."""
    filters = {
        name: func if name in _UNCHECKED else _guarded(name, func) for name, func in FILTERS.items()
    }
    filters["format"] = _format
    filters[LOOP_FILTER] = guard_loop
    return filters


def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    """Jinja's ``lipsum``, at most 10,000 words."""
    if isinstance(n, int) and isinstance(max, int) and n * max > 10_000:
        raise LimitExceeded("lipsum over the limit of 10,000 words")
    return produced(generate_lorem_ipsum(n, html, min, max))
