"""Plain substitution: render a template that only prints variables without running Jinja2.

Most notification templates are text with ``{{ name }}``, ``{{ order.id }}`` or
``{{ items[0] }}`` in it. Jinja2 renders those correctly but builds a context
for every call, which costs more than the whole rest of a send. A field whose
parsed template is nothing but literal text and such lookups is compiled once
into a :class:`Substitution` that joins the pieces directly.

It gives the same text as Jinja2 or gives up: :meth:`Substitution.render`
returns None whenever the answer could differ (a name missing from the data, a
key that is also a ``dict`` attribute, a value that is not a plain JSON scalar),
and the caller renders with Jinja2, which then also produces the errors.
tests/unit/test_substitution.py compares the two on generated templates and data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import nodes
from markupsafe import escape

from outbox.template_limits import MAX_OUTPUT_CHARS

# A lookup: the variable name, then steps into it: (True, key) for ``.key``
# (attribute syntax), (False, key) for ``[key]``.
_Step = tuple[bool, Any]
_Lookup = tuple[str, tuple[_Step, ...]]
# What Jinja2 prints as str(value) (after None -> ''): the JSON scalars.
_SCALARS = (str, int, float, bool)


class Substitution:
    """Literal text and variable lookups, in order; see the module docstring."""

    __slots__ = ("_autoescape", "_parts")

    def __init__(self, parts: list[str | _Lookup], *, autoescape: bool) -> None:
        self._parts = tuple(parts)
        self._autoescape = autoescape

    @classmethod
    def from_ast(cls, ast: nodes.Template, *, autoescape: bool) -> Substitution | None:
        """The substitution for a parsed template, or None if it does more than print lookups."""
        parts: list[str | _Lookup] = []
        for statement in ast.body:
            if not isinstance(statement, nodes.Output):
                return None
            for node in statement.nodes:
                if isinstance(node, nodes.TemplateData):
                    parts.append(node.data)
                    continue
                lookup = _lookup(node)
                if lookup is None:
                    return None
                parts.append(lookup)
        return cls(parts, autoescape=autoescape)

    def render(self, data: Mapping[str, Any], limit: int = MAX_OUTPUT_CHARS) -> str | None:
        """The rendered text, or None if Jinja2 must decide (see the module docstring).

        Also None past ``limit`` characters: many lookups of one long value are
        the one way this path builds a long text, and Jinja2 says why it stops.
        """
        out = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            name, steps = part
            value = data.get(name, _MISSING) if type(data) is dict else _MISSING
            for attribute_syntax, key in steps:
                value = _step(value, attribute_syntax, key)
            if value is None:
                out.append("")  # the environments' finalize: a JSON null prints as nothing
            elif isinstance(value, _SCALARS):
                out.append(str(escape(value)) if self._autoescape else str(value))
            else:
                return None
        # Many lookups of one long value could build a huge text: add up first. A few
        # cannot (each value is already in memory): join, then look.
        if len(out) > _FEW and sum(map(len, out)) > limit:
            return None
        text = "".join(out)
        return text if len(text) <= limit else None


_FEW = 8


class _Missing:
    """A lookup that Jinja2 would resolve differently (or fail): give up on this render."""


_MISSING: Any = _Missing()


def _step(value: Any, attribute_syntax: bool, key: Any) -> Any:
    # Exact types: a dict subclass (OrderedDict, Counter) has attributes dict lacks.
    if type(value) is dict:
        # ``d.key`` finds dict attributes (``d.items``) before keys; ``d[key]`` finds keys first.
        if attribute_syntax and hasattr(dict, key):
            return _MISSING
        return value.get(key, _MISSING) if isinstance(key, str) else _MISSING
    if (
        type(value) is list
        and not attribute_syntax
        and isinstance(key, int)
        and not isinstance(key, bool)
        and -len(value) <= key < len(value)
    ):
        return value[key]
    return _MISSING


# Names Jinja2 resolves before the data: ``self`` is the template itself.
_RESERVED = frozenset({"self"})


def _lookup(node: nodes.Node) -> _Lookup | None:
    steps: list[_Step] = []
    while True:
        if isinstance(node, nodes.Name):
            if node.ctx != "load" or node.name in _RESERVED:
                return None
            return node.name, tuple(reversed(steps))
        if isinstance(node, nodes.Getattr):
            steps.append((True, node.attr))
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str | int)
        ):
            steps.append((False, node.arg.value))
        else:
            return None
        node = node.node
