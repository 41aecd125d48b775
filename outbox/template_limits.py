"""What rendering one template may cost: time, output size, and the text it builds on the way.

A template is a small program run on every send. Jinja2's sandbox stops it from
reaching Python's internals, not from running for hours or filling the memory
(``{% for i in range(100000) %}{% for j in range(100000) %}``,
``'{:>1000000000}'.format(1)``, ``a ~ a`` doubled forty times). These limits do:

* **time**: each render has a deadline (:data:`RENDER_TIMEOUT_SECONDS` unless
  the caller gives one). Loops count their iterations (a small loop once, up
  front), calls count, and so do the iterators filters return; the clock is
  read every :data:`_CHECK_EVERY` steps, so the check costs next to nothing.
  Straight-line code needs no count: it is bounded by the source's size and
  by the work limit below. A Python-level check cannot interrupt one long C
  call, hence:
* **size**: every operation that can build a large value out of small ones is
  checked *before* it runs, so that no value longer than :data:`MAX_VALUE_CHARS`
  is ever built: repetition, ``+``, ``~``, ``%``, ``str.format`` widths,
  padding (``center``, ``indent``, ``ljust``...), ``join``, ``replace``,
  printing a container (its repr, which can repeat one large string many times);
  the str methods, filters and globals among these are in
  outbox/template_builtins.py;
* **work**: the text and lists those operations build in one render (past
  :data:`UNCOUNTED_CHARS`) are counted, up to :data:`MAX_WORK_CHARS`, so a loop
  building many values under the size limit stops too; each field's output
  is at most :data:`MAX_OUTPUT_CHARS`.

What an ordinary template does (print values, a few conditions, short loops,
a filter or two) stays on fast paths: constant-time filters are not wrapped,
a small loop is counted once, short results are not counted, and the plain
substitution path (outbox/substitution.py) only adds up lengths. Measure with
``python -m benchmarks.render``. Messages are fixed text with the limit in it,
never a value from the data.
"""

from __future__ import annotations

import functools
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from itertools import chain, islice
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.utils import Namespace
from markupsafe import Markup, soft_str

#: One template field's source, in UTF-8 bytes (outbox.create_template refuses more).
MAX_SOURCE_BYTES = 256 * 1024
#: One field's rendered text, in characters.
MAX_OUTPUT_CHARS = 1024 * 1024
#: Any one value a template builds (a string, the text of a printed list).
MAX_VALUE_CHARS = MAX_OUTPUT_CHARS
#: All the text a render builds on the way, in characters.
MAX_WORK_CHARS = 16 * MAX_OUTPUT_CHARS
#: Items of a list a template builds (``[0] * n``, ``a + b``), or padding it asks for.
MAX_ITEMS = 100_000
#: Bits of an integer a template computes (``**``, ``*``).
MAX_INT_BITS = 4096
#: A render's deadline unless the caller gives one.
RENDER_TIMEOUT_SECONDS = 1.0

# Steps between two reads of the clock: about every 0.1 ms in a tight loop.
_CHECK_EVERY = 256
# Loops over at most this many items are charged once, up front, and run untouched.
_SMALL_LOOP = 64


class LimitExceeded(SecurityError):
    """An operation refused by these limits; its message is fixed text, safe to show."""


class TimeLimit(LimitExceeded):
    """The render ran past its deadline."""


def size_error(what: str) -> LimitExceeded:
    return LimitExceeded(f"{what} over the size limit of {MAX_VALUE_CHARS:,} characters")


# --- the budget of the render in progress ---------------------------------------------------


class Budget:
    """The deadline and work left of the render in progress on this thread."""

    __slots__ = ("countdown", "deadline", "timeout", "work")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.countdown = _CHECK_EVERY
        self.work = MAX_WORK_CHARS

    def check_time(self) -> None:
        self.countdown = _CHECK_EVERY
        if time.monotonic() > self.deadline:
            raise TimeLimit(f"rendering took longer than the time limit of {self.timeout:g} s")

    def spend(self, chars: int) -> None:
        self.work -= chars
        if self.work < 0:
            raise LimitExceeded(
                "the template builds more text than the limit of "
                f"{MAX_WORK_CHARS:,} characters in all"
            )


class _Unlimited(Budget):
    """Outside a render (Jinja folds constants when it compiles): sizes are still checked."""

    def __init__(self) -> None:
        super().__init__(math.inf)

    def check_time(self) -> None:
        self.countdown = _CHECK_EVERY

    def spend(self, chars: int) -> None:
        return None


class _Current(threading.local):
    budget: Budget = _Unlimited()


current = _Current()


def tick(steps: int = 1) -> None:
    budget = current.budget
    budget.countdown -= steps
    if budget.countdown < 0:
        budget.check_time()


def produced(value: Any) -> Any:
    """Count a value an operation built against the limits; return it.

    Text and lists are counted by their length, over :data:`UNCOUNTED_CHARS` (no value may
    be longer than :data:`MAX_VALUE_CHARS`); an iterator (``map``, ``select``...)
    comes back counting a step per item, as loops do.
    """
    if type(value) is str:  # the common case first
        if len(value) > UNCOUNTED_CHARS:
            _count(len(value))
        return value
    if isinstance(value, str | bytes | list | tuple):
        if len(value) > UNCOUNTED_CHARS:
            _count(len(value))
    elif hasattr(type(value), "__next__"):
        return _Ticking(value, current.budget)
    return value


# Shorter text or lists are not counted: building one takes no time worth counting,
# and keeping many needs a list, a '~' or a join, which are counted in turn.
UNCOUNTED_CHARS = 256


def _count(size: int) -> None:
    if size > MAX_VALUE_CHARS:
        raise size_error("a value")
    current.budget.spend(size)


# --- how long a value's text is, without building it -----------------------------------------


def text_size(value: Any, *, nested: int = 0) -> int:
    """An upper bound on ``len(str(value))``; LimitExceeded past :data:`MAX_VALUE_CHARS`.

    Only containers are walked (their repr can hold one large string many
    times over); ``nested`` adds that many characters per item and level, for
    indented JSON.
    """
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, list | tuple | dict | set | frozenset | Namespace):
        return _scalar_size(value)
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        total += 2 + nested * depth
        if isinstance(item, str):
            # repr escapes: at most \U0010ffff for one character.
            total += 10 * len(item)
        elif isinstance(item, Namespace):
            total += 12
            stack.append((object.__getattribute__(item, "_Namespace__attrs"), depth))
        elif isinstance(item, dict):
            stack.extend((part, depth + 1) for part in chain.from_iterable(item.items()))
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend((part, depth + 1) for part in item)
        else:
            total += _scalar_size(item)
        if total > MAX_VALUE_CHARS:
            raise size_error("the text of a container")
    return total


def _scalar_size(value: Any) -> int:
    if type(value) is int:
        # Python refuses to print more than 4300 digits anyway.
        return value.bit_length() // 3 + 2
    return 64  # a number, None, a date, an object's repr


def checked_str(value: Any) -> str:
    if not isinstance(value, str):
        text_size(value)
    return soft_str(value)


# --- operators -------------------------------------------------------------------------------


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``*``, ``**``, ``+`` and ``%`` whose result would be over the limits."""
    if operator == "+":
        if isinstance(left, str | bytes) and isinstance(right, str | bytes):
            if len(left) + len(right) > MAX_VALUE_CHARS:
                raise size_error("'+'")
        elif (
            isinstance(left, list | tuple)
            and isinstance(right, list | tuple)
            and len(left) + len(right) > MAX_ITEMS
        ):
            raise LimitExceeded(f"'+' builds a list over the limit of {MAX_ITEMS:,} items")
    elif operator == "*":
        for seq, times in ((left, right), (right, left)):
            if (
                isinstance(seq, str | bytes | list | tuple)
                and isinstance(times, int)
                and len(seq) * times > MAX_ITEMS
            ):
                raise LimitExceeded("repetition too large")
        if (
            type(left) is int
            and type(right) is int
            and left.bit_length() + right.bit_length() > MAX_INT_BITS
        ):
            raise LimitExceeded("product too large")
    elif operator == "**":
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and right > 0
            and abs(left).bit_length() * right > MAX_INT_BITS
        ):
            raise LimitExceeded("power too large")
    elif operator == "%" and isinstance(left, str):
        percent_size(left, right)


# A %-format directive, as Python's printf-style formatting reads it.
_DIRECTIVE = re.compile(
    r"%(?:\((?P<key>[^()]*)\))?[#0\- +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?"
    r"[hlL]?(?P<conversion>[diouxXeEfFgGcrsa%])"
)


def percent_size(fmt: str, values: Any) -> int:
    """An upper bound on the length of ``fmt % values``; LimitExceeded over the limit.

    A directive this parser does not read exactly as Python does (a key with
    parentheses in it) is refused rather than guessed at.
    """
    fixed, directives = parse_percent(fmt)
    if not directives:
        return fixed  # only numbers with fixed widths: checked once per format string
    positional = list(values) if isinstance(values, tuple) else [values]
    mapping = values if isinstance(values, Mapping) else {}
    index, size = 0, fixed
    for key, width, precision, conversion in directives:
        numbers = []
        for part in (width, precision):
            if part == -1:  # '*': the next value
                given = positional[index] if index < len(positional) else 0
                index += 1
                part = given if type(given) is int else 0
            numbers.append(part)
        if max(numbers) > MAX_VALUE_CHARS:
            raise size_error("a '%' format width or precision")
        if key is not None:
            value = mapping.get(key)
        else:
            value = positional[index] if index < len(positional) else None
            index += 1
        if conversion == "s":
            shown = text_size(value)
        elif conversion in "ra":
            shown = 10 * text_size(value) + 2
        else:
            shown = numbers[1] + _scalar_size(value) + _FLOAT_DIGITS
        size += max(numbers[0], shown)
        if size > MAX_VALUE_CHARS:
            raise size_error("'%' formatting")
    return size


# The digits of the largest float, printed with %f.
_FLOAT_DIGITS = 320


@functools.lru_cache(maxsize=1024)
def parse_percent(fmt: str) -> tuple[int, tuple[tuple[str | None, int, int, str], ...]]:
    """The fixed part of a %-format's length bound (its text, and directives that print
    a number with literal widths), and the directives whose size depends on the values
    (key, width, precision, conversion; -1 for a '*' width or precision)."""
    fixed, directives, at = len(fmt), [], fmt.find("%")
    while at >= 0:
        match = _DIRECTIVE.match(fmt, at)
        if match is None:
            raise LimitExceeded("a '%' format this sandbox cannot check")
        at = fmt.find("%", match.end())
        conversion = match["conversion"]
        if conversion == "%":
            continue
        width, precision = (
            -1 if part == "*" else _number(part or "0")
            for part in (match["width"], match["precision"])
        )
        if max(width, precision) > MAX_VALUE_CHARS:
            raise size_error("a '%' format width or precision")
        if conversion in "sra" or -1 in (width, precision) or match["key"] is not None:
            directives.append((match["key"], width, precision, conversion))
        else:
            # A number: at most its digits (Python prints at most 4300 of an int).
            fixed += max(width, precision + 4300 + _FLOAT_DIGITS)
    if fixed > MAX_VALUE_CHARS:
        raise size_error("'%' formatting")
    return fixed, tuple(directives)


def _number(digits: str) -> int:
    # Past 7 digits it is over the limit anyway; int() of a huge string costs.
    return int(digits) if len(digits) <= 7 else MAX_VALUE_CHARS + 1


def check_format_spec(spec: str) -> None:
    """Refuse a ``str.format`` field whose width or precision is over the size limit."""
    for digits in re.findall(r"\d+", spec):
        if _number(digits) > MAX_VALUE_CHARS:
            raise size_error("a format width or precision")


def join_text(args: Iterable[Any]) -> str:
    """``a ~ b ~ c`` as plain text, refused before building it if over the limit."""
    pieces = [checked_str(arg) for arg in args]
    return _joined(pieces, "")


def join_markup(args: Iterable[Any]) -> str:
    """``a ~ b`` where autoescape is on: like Jinja's markup_join, with the limits."""
    pieces = [checked_str(arg) for arg in args]
    # Escaping the plain pieces can make the result longer: count what it is.
    markup = any(hasattr(piece, "__html__") for piece in pieces)
    return _joined(pieces, Markup("") if markup else "")


def _joined(pieces: list[str], separator: str) -> str:
    size = sum(map(len, pieces))
    if size > MAX_VALUE_CHARS:
        raise size_error("'~'")
    return produced(separator.join(pieces))


def concat(pieces: Iterable[str]) -> str:
    """A field's output (and a macro's, a block's, a ``{% set %}`` block's): the
    pieces joined, stopped as soon as they pass :data:`MAX_OUTPUT_CHARS`."""
    # Counted a few pieces at a time: one piece is at most a value's size limit, and
    # a Python loop over every piece would cost more than the rest of the render.
    rest = iter(pieces)
    out = list(islice(rest, _CONCAT_CHUNK))
    size = sum(map(len, out))
    if len(out) >= _CONCAT_CHUNK:
        while size <= MAX_OUTPUT_CHARS:
            chunk = list(islice(rest, _CONCAT_CHUNK))
            if not chunk:
                break
            size += sum(map(len, chunk))
            out += chunk
    if size > MAX_OUTPUT_CHARS:
        raise LimitExceeded(f"output over the size limit of {MAX_OUTPUT_CHARS:,} characters")
    budget = current.budget
    budget.work -= size
    if budget.work < 0:
        budget.spend(0)
    return "".join(out)


_CONCAT_CHUNK = 32


# --- loops -----------------------------------------------------------------------------------


class _Ticking:
    """A loop's iterable that counts a step per item (and keeps its length for ``loop``)."""

    __slots__ = ("_budget", "_items")

    def __init__(self, items: Iterable[Any], budget: Budget) -> None:
        self._items = items
        self._budget = budget

    def __len__(self) -> int:
        return len(self._items)  # type: ignore[arg-type]  # TypeError if unsized, as Jinja expects

    def __iter__(self) -> Iterator[Any]:
        budget = self._budget
        for index, item in enumerate(self._items):
            if not index & 15:
                budget.countdown -= 16
                if budget.countdown < 0:
                    budget.check_time()
            yield item


def guard_loop(items: Any) -> Any:
    """Every ``{% for %}``'s iterable goes through this (see templates._compile_field)."""
    budget = current.budget
    try:
        count = len(items)
    except TypeError:
        return _Ticking(items, budget)
    budget.countdown -= count
    if budget.countdown < 0:
        budget.check_time()
    return items if count <= _SMALL_LOOP else _Ticking(items, budget)


#: The name under which templates._compile_field wraps every loop's iterable.
LOOP_FILTER = "outbox_loop"
