"""What one render may cost (outbox/template_limits.py): time, output size, what it builds.

Each attack below rendered a gigabyte, ran out of memory, or ran for minutes
before the limits (findings T1 and T2 in the December 2026 reliability probe);
each must now stop with a TemplateError whose reason is fixed text naming the
limit, never a value from the data.
"""

from __future__ import annotations

import inspect
from itertools import count

import pytest

from outbox import template_builtins, template_limits
from outbox.errors import TemplateTimeout
from outbox.templates import (
    TemplateError,
    TemplateVersion,
    check_template,
    compile_template,
    content_hash,
    render,
)

_ids = count(2_000_000)
SECRET = "4111-1111-1111-1111"
DATA = {"card": SECRET, "big": "y" * 60_000, "items": list(range(1000))}


def make(body: str, *, html_body: str | None = None) -> TemplateVersion:
    subject = "s" if html_body is not None else None
    return TemplateVersion(
        id=next(_ids),
        key="bomb",
        channel="email" if html_body is not None else "sms",
        locale="default",
        version=1,
        subject=subject,
        body=body,
        html_body=html_body,
        title=None,
        content_hash=content_hash(subject, body, html_body, None),
    )


def refused(source: str, *, timeout: float = 5.0, html: bool = False) -> TemplateError:
    template = make("x", html_body=source) if html else make(source)
    with pytest.raises(TemplateError) as caught:
        render(template, DATA, timeout=timeout)
    error = caught.value
    assert SECRET not in str(error) and "yyyy" not in str(error)
    assert error.__cause__ is None
    return error


# The rows of finding T2's table, in order, then the other ways round the `*` limit.
T2 = {
    "format width": "{{ '{:>1000000000}'.format(1) }}",
    "~ of ~ (x10, 4 levels)": "{% set a = 'x' * 100000 %}{% set b = a~a~a~a~a~a~a~a~a~a %}"
    "{% set c = b~b~b~b~b~b~b~b~b~b %}{% set d = c~c~c~c~c~c~c~c~c~c %}"
    "{% set e = d~d~d~d~d~d~d~d~d~d %}{{ e|length }}",
    "~ doubling in a loop": "{% set ns = namespace(v='x') %}{% for i in range(40) %}"
    "{% set ns.v = ns.v ~ ns.v %}{% endfor %}{{ ns.v|length }}",
    "% width": "{{ '%1000000000d' % 1 }}",
    "|format width": "{{ '%1000000000d'|format(1) }}",
    "|center": "{{ 'x'|center(1000000000) }}",
    "|indent": "{{ 'a\nb'|indent(1000000000) }}",
    "+ doubling": "{% set ns = namespace(v='x') %}{% for i in range(40) %}"
    "{% set ns.v = ns.v + ns.v %}{% endfor %}{{ ns.v|length }}",
    "+ of lists": "{% set ns = namespace(v=[0]) %}{% for i in range(40) %}"
    "{% set ns.v = ns.v + ns.v %}{% endfor %}{{ ns.v|length }}",
    "* of integers": "{% set ns = namespace(v=3) %}{% for i in range(40) %}"
    "{% set ns.v = ns.v * ns.v %}{% endfor %}{{ ns.v }}",
    "format precision": "{{ '{:.1000000000f}'.format(1.0) }}",
    "format width from an argument": "{{ '{:{}}'.format(1, 1000000000) }}",
    "% star width": "{{ '%*d' % (1000000000, 1) }}",
    "% of one value many times": "{% set s = 'x' * 100000 %}{{ ('%(a)s' * 20000) % {'a': s} }}",
    "|format of one value many times": "{% set s = 'x' * 100000 %}"
    "{{ ('%(a)s' * 20000)|format(a=s) }}",
    "str.format of one value many times": "{% set s = 'x' * 100000 %}"
    "{{ ('{0}' * 30000).format(s) }}",
    "str.ljust": "{{ 'x'.ljust(1000000000) }}",
    "str.zfill": "{{ '1'.zfill(1000000000) }}",
    "str.expandtabs": "{{ ('\t' * 100000).expandtabs(100000) }}",
    "str.join": "{{ ('x' * 100000).join(['a'] * 100000) }}",
    "str.replace": "{{ ('x' * 100000).replace('x', 'y' * 100000) }}",
    "str.translate": "{{ ('x' * 100000).translate({120: 'y' * 100000}) }}",
    "int.to_bytes": "{{ (1).to_bytes(1000000000, 'big') }}",
    "|replace": "{{ ('x' * 100000)|replace('x', 'y' * 100000) }}",
    "|join": "{{ range(100000)|join('x' * 100000) }}",
    "|wordwrap": "{{ ('a b ' * 10000)|wordwrap(1, wrapstring='x' * 100000) }}",
    "|batch fill": "{{ [1]|batch(1000000000, 0)|list }}",
    "|slice": "{{ [1]|slice(1000000000)|list }}",
    "|sum of lists": "{{ [[0] * 100000] * 100000|sum(start=[]) }}",
    "|tojson indent": "{{ items|tojson(indent=1000000000) }}",
    "lipsum": "{{ lipsum(1000000000) }}",
    "a list's repr": "{% set s = 'x' * 100000 %}{{ [s] * 50000 }}",
    "a list's repr via |string": "{% set s = 'x' * 100000 %}{{ ([s] * 50000)|string }}",
    "a list's repr via ~": "{% set s = 'x' * 100000 %}{{ '' ~ [s] * 50000 }}",
    "a list's JSON": "{% set s = 'x' * 100000 %}{{ [[s] * 50000]|tojson }}",
    "output": "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
    "a macro's output": "{% macro m() %}{% for i in range(100000) %}{{ 'x' * 1000 }}"
    "{% endfor %}{% endmacro %}{{ m()|length }}",
    "many values under the size limit": "{% set s = 'x' * 100000 %}{% for i in range(100000) %}"
    "{% set t = s|upper %}{% endfor %}",
    "many slices kept in a list": "{% set s = 'x' * 100000 %}{% set s = s~s~s~s~s~s~s~s~s~s %}"
    "{% set l = [s[1:], s[2:], s[3:], s[4:], s[5:], s[6:], s[7:], s[8:], s[9:], s[10:],"
    " s[11:], s[12:], s[13:], s[14:], s[15:], s[16:], s[17:], s[18:], s[19:]] %}{{ l|length }}",
    "map over copies": "{% set s = 'x' * 100000 %}{{ ([s] * 50000)|map('upper')|list|length }}",
    "data printed many times": "{% for i in range(100000) %}{{ big }}{% endfor %}",
}


@pytest.mark.parametrize("source", T2.values(), ids=T2.keys())
def test_size_tricks_are_refused_with_a_reason_naming_the_limit(source):
    error = refused(source)
    assert error.reason.endswith("(sandbox)")
    assert "limit" in error.reason or "too large" in error.reason or "only adds" in error.reason
    assert not isinstance(error, TemplateTimeout)
    assert error.field == "body"


def test_the_html_body_has_the_same_limits():
    refused("{{ '{:>1000000000}'.format(1) }}", html=True)
    refused("{% set s = 'x' * 100000 %}{{ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s }}", html=True)
    refused("{{ big ~ big }}" * 20, html=True)


CPU = {
    "nested loops (T1)": "{% for i in range(100000) %}{% for j in range(100000) %}"
    "{% endfor %}{% endfor %}x",
    "nested loops over a filter": "{% for a in range(100000)|list %}"
    "{% for b in range(100000)|map('int') %}{% endfor %}{% endfor %}",
    "nested loops over data": "{% for a in items %}{% for b in items %}{% for c in items %}"
    "{% endfor %}{% endfor %}{% endfor %}",
    "small loops, deeply nested": "{% set l = range(50) %}{% for a in l %}{% for b in l %}"
    "{% for c in l %}{% for d in l %}{% for e in l %}{% endfor %}{% endfor %}{% endfor %}"
    "{% endfor %}{% endfor %}",
    "a macro called in a loop": "{% macro m() %}{% endmacro %}{% for i in range(100000) %}"
    "{% for j in range(100000) %}{{ m() }}{% endfor %}{% endfor %}",
}


@pytest.mark.parametrize("source", CPU.values(), ids=CPU.keys())
def test_a_cpu_bomb_stops_at_the_time_limit(source):
    error = refused(source, timeout=0.2)
    assert isinstance(error, TemplateTimeout)
    assert error.reason == "rendering took longer than the time limit of 0.2 s (sandbox)"
    assert str(error).startswith("template 'bomb' v1 (default): rendering took longer")


def test_recursion_is_refused_as_such():
    error = refused("{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}")
    assert error.reason == "recursion too deep (sandbox)"


def test_ordinary_uses_of_the_guarded_operations_still_work():
    source = (
        "{{ 'x'|center(5) }}|{{ '{:>4}'.format('a') }}|{{ '{:,}'.format(1234567) }}"
        "|{{ '%5.2f'|format(3.14159) }}|{{ '%s-%03d' % ('a', 7) }}|{{ '%(n)s' % {'n': 1} }}"
        "|{{ 'ab' ~ 1 ~ [1, 2] }}|{{ [1] + [2] }}|{{ 1 + 2.5 }}|{{ 'a' + 'b' }}|{{ 'ab' * 2 }}"
        "|{{ 'a\nb'|indent(2, true) }}|{{ [1, 2, 3]|join(',') }}|{{ {'a': 1}|tojson }}"
        "|{{ 'a-b'.replace('-', '+') }}|{{ '-'.join(['a', 'b']) }}|{{ 'x'.ljust(3, '.') }}"
        "|{{ [1, 2, 3, 4]|batch(3, 0)|list }}|{{ items[:3]|sum }}|{{ 'abc'[1:] }}"
        "|{% for i in range(100) %}{% if loop.last %}{{ loop.length }}{% endif %}{% endfor %}"
        "|{% for i in items|select('odd') %}{% if loop.first %}{{ i }}{% endif %}{% endfor %}"
        "|{{ (2 ** 10) * 3 }}|{{ lipsum(1, false, 3, 4).split()|length > 0 }}"
    )
    assert render(make(source), DATA).body == (
        "  x  |   a|1,234,567| 3.14|a-007|1|ab1[1, 2]|[1, 2]|3.5|ab|abab|  a\n  b|1,2,3"
        '|{"a": 1}|a+b|a-b|x..|[[1, 2, 3], [4, 0, 0]]|3|bc|100|1|3072|True'
    )


def test_a_value_at_the_size_limit_is_fine_one_over_is_not():
    limit = template_limits.MAX_OUTPUT_CHARS
    exact = "{{ 'x' * 1024 }}{% for i in range(" + str(limit // 1024 - 1) + ") %}"
    exact += "{{ 'x' * 1024 }}{% endfor %}"
    assert len(render(make(exact), {}).body) == limit
    refused(exact + "!")


def test_plain_substitution_is_bounded_too():
    # Printing one long value many times takes the Jinja path, which says why it stops.
    template = make("{{ big }}" * 20)
    assert len(render(template, {"big": "y" * 50_000}).body) == 1_000_000
    with pytest.raises(TemplateError, match=r"output over the size limit"):
        render(template, {"big": "y" * 60_000})


def test_a_source_over_256_kib_does_not_compile():
    body = "x" * (template_limits.MAX_SOURCE_BYTES + 1)
    with pytest.raises(TemplateError) as caught:
        compile_template(make(body))
    assert caught.value.field == "body"
    assert caught.value.reason == "source is 262,145 bytes, over the limit of 262,144 (256 KiB)"
    check_template(make("x" * template_limits.MAX_SOURCE_BYTES))
    with pytest.raises(TemplateError, match="nested too deeply"):
        check_template(make("{{ " + "(" * 20_000 + "1" + ")" * 20_000 + " }}"))


def test_the_time_limit_is_per_render_and_the_next_render_starts_afresh():
    bomb = make(CPU["nested loops (T1)"])
    with pytest.raises(TemplateTimeout):
        render(bomb, {}, timeout=0.05)
    assert render(make("{% for i in range(3) %}{{ i }}{% endfor %}"), {}).body == "012"
    assert template_limits.current.budget.timeout == float("inf")


def test_each_checked_filter_takes_what_jinja_passes_first():
    """A checked filter must take the same leading argument (eval context, environment)
    as the Jinja filter it replaces, or its checks read the wrong argument."""
    from jinja2.filters import FILTERS
    from jinja2.utils import _PassArg

    for name, checked in {
        **template_builtins._CHECKED,
        "format": template_builtins._format,
    }.items():
        passed = _PassArg.from_obj(FILTERS[name])
        first = next(iter(inspect.signature(checked).parameters))
        expected = {None: None, _PassArg.eval_context: "eval_ctx"}.get(passed, "environment")
        assert (first if first in ("eval_ctx", "environment") else None) == expected, name
