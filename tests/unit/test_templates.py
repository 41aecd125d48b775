"""Template rendering, its errors, locale chains, content hashes and channel limits."""

from __future__ import annotations

import hashlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outbox import templates
from outbox.channel_limits import LimitError, check_limits, push_payload_size, sms_segments
from outbox.errors import OutboxError, UnknownChannel
from outbox.templates import (
    Rendered,
    TemplateError,
    TemplateVersion,
    compile_template,
    content_hash,
    locale_chain,
    render,
)

_ids = iter(range(1, 10**9))


def make(
    body: str = "",
    *,
    subject: str | None = None,
    html_body: str | None = None,
    title: str | None = None,
    channel: str = "email",
    id: int | None = None,
) -> TemplateVersion:
    """A template version with a fresh id, so tests never share cache entries by accident."""
    return TemplateVersion(
        id=next(_ids) if id is None else id,
        key="order_confirmed",
        channel=channel,
        locale="fr",
        version=3,
        subject=subject,
        body=body,
        html_body=html_body,
        title=title,
        content_hash=content_hash(subject, body, html_body, title),
    )


# --- rendering -------------------------------------------------------------------------


def test_renders_every_field_with_the_data_as_variables():
    template = make(
        "Order {{ order.id }}: {{ order.total }} EUR",
        subject="Order {{ order.id }} confirmed",
        html_body="<p>Order <b>{{ order.id }}</b></p>",
        title="Thanks {{ name }}",
    )
    rendered = render(template, {"order": {"id": 42, "total": "9.90"}, "name": "Zoé"})
    assert rendered == Rendered(
        subject="Order 42 confirmed",
        body="Order 42: 9.90 EUR",
        html_body="<p>Order <b>42</b></p>",
        title="Thanks Zoé",
    )


def test_fields_the_template_does_not_have_stay_none():
    assert render(make("hi", channel="sms"), {}) == Rendered(None, "hi", None, None)


def test_autoescape_applies_to_the_html_body_only():
    value = "<script>alert('x')</script> & co"
    template = make("{{ v }}", subject="{{ v }}", html_body="<p>{{ v }}</p>", title="{{ v }}")
    rendered = render(template, {"v": value})
    assert rendered.subject == rendered.body == rendered.title == value
    assert rendered.html_body == ("<p>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co</p>")


def test_template_authors_can_still_mark_html_safe():
    rendered = render(make("x", html_body="{{ '<br>'|safe }}{{ v }}"), {"v": "<br>"})
    assert rendered.html_body == "<br>&lt;br&gt;"


def test_a_null_value_prints_as_nothing():
    assert render(make("Hi {{ name }}!"), {"name": None}).body == "Hi !"


def test_everyday_template_idioms_work_in_the_sandbox():
    source = (
        "{% set ns = namespace(total=0) %}"
        "{% for item in items %}{% set ns.total = ns.total + item.price %}{% endfor %}"
        "{{ ns.total }} {{ items|map(attribute='price')|sum }} {{ '%.2f'|format(2.5) }}"
        " {{ '{:,}'.format(1234567) }} {% for k, v in sizes|dictsort %}{{ k }}={{ v }};{% endfor %}"
    )
    data = {"items": [{"price": 2}, {"price": 3}], "sizes": {"b": 1, "a": 2}}
    assert render(make(source), data).body == "5 5 2.50 1,234,567 a=2;b=1;"


def test_templates_cannot_modify_the_data():
    data = {"items": [1, 2]}
    with pytest.raises(TemplateError, match="sandbox"):
        render(make("{{ items.append(3) }}"), data)
    assert data == {"items": [1, 2]}


# --- undefined values ---------------------------------------------------------------


def test_undefined_variable_names_template_variable_field_and_line():
    with pytest.raises(TemplateError) as caught:
        render(make("Hello\n{{ order }}"), {})
    error = caught.value
    assert str(error) == (
        "template 'order_confirmed' v3 (fr): undefined variable 'order' in body line 2"
    )
    assert (error.key, error.version, error.locale) == ("order_confirmed", 3, "fr")
    assert (error.field, error.line, error.variable) == ("body", 2, "order")
    assert isinstance(error, OutboxError)


def test_undefined_attribute_is_named_by_its_path():
    with pytest.raises(TemplateError, match=r"undefined variable 'order\.total' in subject"):
        render(make("x", subject="{{ order.total }}"), {"order": {"id": 1}})


def test_undefined_attribute_of_a_loop_variable():
    template = make("{% for item in items %}\n{{ item.sku }}\n{% endfor %}")
    with pytest.raises(TemplateError) as caught:
        render(template, {"items": [{"name": "pen"}]})
    assert caught.value.variable == "item.sku"
    assert caught.value.line == 2


def test_undefined_in_a_condition_is_an_error_too():
    with pytest.raises(TemplateError, match="undefined variable 'vip'"):
        render(make("{% if vip %}gold{% endif %}"), {})


def test_an_attribute_reached_by_several_paths_is_named_alone():
    with pytest.raises(TemplateError, match="undefined attribute 'total'"):
        render(make("{{ a.total }}{{ b.total }}"), {"a": {"total": 1}, "b": {}})


def test_jinja_hints_are_kept_they_hold_no_data():
    with pytest.raises(TemplateError, match="undefined value: No first item, sequence was empty"):
        render(make("{{ (items|first).name }}"), {"items": []})


def test_is_defined_still_works():
    assert render(make("{{ 'yes' if vip is defined else 'no' }}"), {}).body == "no"


def test_a_key_taken_from_the_data_is_not_shown():
    with pytest.raises(TemplateError) as caught:
        render(make("{{ prices[sku] }}"), {"prices": {"A": 1}, "sku": "SECRET-SKU-123"})
    assert "SECRET-SKU-123" not in str(caught.value)
    assert "undefined item" in str(caught.value)


def test_no_data_value_reaches_the_message_or_the_exception_chain():
    secret = "4111-1111-1111-1111"
    with pytest.raises(TemplateError) as caught:
        render(make("{{ card + 1 }}"), {"card": secret})
    error = caught.value
    assert secret not in str(error)
    assert "rendering failed (TypeError)" in str(error)
    # The original exception quotes values; it is not chained into logged tracebacks.
    assert error.__cause__ is None and error.__suppress_context__


# --- the sandbox -------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__.os }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'].popen('id').read() }}",
        "{{ self.__init__.__globals__ }}",
        "{{ ''|attr('__class__') }}",
        "{{ '{0.__class__}'.format(1) }}",
        "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
        "{{ x[k] }}",
        "{{ 2 ** 100000 }}",
        "{{ 9 ** (9 ** 9) }}",
        "{{ 'x' * 10 ** 9 }}",
        "{{ [0] * 10 ** 9 }}",
    ],
)
def test_sandbox_escapes_and_bombs_fail_with_a_template_error(source):
    with pytest.raises(TemplateError, match=r"\(sandbox\)") as caught:
        render(make(source), {"x": "", "k": "__class__"})
    assert caught.value.field == "body"


def test_blocked_attribute_is_named_when_written_in_the_template():
    with pytest.raises(TemplateError) as caught:
        render(make("{{ cycler.__init__ }}"), {})
    assert "access to '__init__' is not allowed (sandbox)" in str(caught.value)


def test_moderate_arithmetic_and_repetition_still_work():
    assert render(make("{{ 2 ** 10 }} {{ '-' * 5 }}"), {}).body == "1024 -----"


# --- compiling and the cache ----------------------------------------------------------


def test_syntax_error_names_field_and_line():
    with pytest.raises(TemplateError) as caught:
        compile_template(make("ok", html_body="<p>\n{{ order.id </p>"))
    assert (caught.value.field, caught.value.line) == ("html_body", 2)
    assert str(caught.value).startswith("template 'order_confirmed' v3 (fr): syntax error: ")


def test_unknown_filter_is_caught_at_compile_time():
    with pytest.raises(TemplateError, match="syntax error: No filter named 'shout'"):
        compile_template(make("{{ name|shout }}"))


@pytest.mark.parametrize(
    "source", ["{% include 'footer' %}", "{% extends 'base' %}", "{% import 'macros' as m %}"]
)
def test_templates_are_self_contained(source):
    with pytest.raises(TemplateError, match="extends, include and import are not supported"):
        compile_template(make(source))


def test_compiled_templates_are_cached_by_id():
    template = make("Hi {{ name }}")
    compiled = compile_template(template)
    assert compile_template(template) is compiled
    # An equal version object (a fresh row from the database) hits the same entry.
    again = TemplateVersion(**{**template.__dict__})
    assert compile_template(again) is compiled
    assert render(again, {"name": "Ada"}).body == "Hi Ada"


def test_same_id_with_other_content_is_recompiled():
    first = make("one", id=987_654_321)
    second = make("two", id=987_654_321)
    assert render(first, {}).body == "one"
    assert render(second, {}).body == "two"
    assert compile_template(second) is not compile_template(first)


def test_the_cache_is_bounded_and_evicts_the_least_recently_used():
    cache = templates._LRU(maxsize=2)
    a, b, c = (compile_template(make(str(n))) for n in range(3))
    cache.put(a)
    cache.put(b)
    assert cache.get(a.version) is a  # a is now the most recently used
    cache.put(c)
    assert len(cache) == 2
    assert cache.get(b.version) is None
    assert cache.get(a.version) is a and cache.get(c.version) is c


def test_the_module_cache_holds_at_most_1024_versions():
    assert templates._CACHE.maxsize == 1024


# --- locales ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "chain"),
    [
        ("fr-CA", ["fr-CA", "fr", "default"]),
        ("fr_CA", ["fr-CA", "fr", "default"]),
        ("FR-ca", ["fr-CA", "fr", "default"]),
        ("fr_CA.UTF-8", ["fr-CA", "fr", "default"]),
        ("de_DE@euro", ["de-DE", "de", "default"]),
        ("fr", ["fr", "default"]),
        ("es-419", ["es-419", "es", "default"]),
        ("zh-hant-tw", ["zh-Hant-TW", "zh-Hant", "zh", "default"]),
        (" en-gb ", ["en-GB", "en", "default"]),
        (None, ["default"]),
        ("", ["default"]),
        ("default", ["default"]),
        ("C", ["default"]),
        ("POSIX", ["default"]),
    ],
)
def test_locale_chain(locale, chain):
    assert locale_chain(locale) == chain


@pytest.mark.parametrize("locale", ["f", "fr-C A", "12-CA", "fr--CA", "fr-toolongsubtag", "é"])
def test_locale_chain_rejects_what_is_not_a_locale(locale):
    with pytest.raises(ValueError, match="invalid locale"):
        locale_chain(locale)


# --- content hash -------------------------------------------------------------------


def test_content_hash_follows_the_documented_encoding():
    expected = hashlib.sha256(b"outbox-template-v1\n2:Hi,12:Body {{ x }},--").hexdigest()
    assert content_hash("Hi", "Body {{ x }}", None, None) == expected
    # Pinned: changing the encoding would create a new version of every template.
    assert expected == "6a1c9354f4471a9262a08fbccebc5469956b9ed7d7a28f2bb26acca673109cb3"


def test_content_hash_counts_bytes_not_characters():
    expected = hashlib.sha256("outbox-template-v1\n-4:Zoé,--".encode()).hexdigest()
    assert content_hash(None, "Zoé", None, None) == expected


def test_content_hash_tells_none_from_empty_and_keeps_fields_apart():
    hashes = {
        content_hash(None, "", None, None),
        content_hash("", "", None, None),
        content_hash("ab", "c", None, None),
        content_hash("a", "bc", None, None),
        content_hash(None, "x", None, "y"),
        content_hash(None, "x", "y", None),
    }
    assert len(hashes) == 6


fields = st.tuples(st.none() | st.text(), st.text(), st.none() | st.text(), st.none() | st.text())


@given(fields, fields)
def test_content_hash_changes_exactly_when_content_does(one, other):
    assert (content_hash(*one) == content_hash(*other)) == (one == other)


# --- SMS segments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("gsm7", 0)),
        ("a" * 160, ("gsm7", 1)),
        ("a" * 161, ("gsm7", 2)),
        ("a" * 306, ("gsm7", 2)),
        ("a" * 307, ("gsm7", 3)),
        ("€" * 80, ("gsm7", 1)),  # 160 septets
        ("€" * 81, ("gsm7", 2)),
        ("a" * 159 + "€", ("gsm7", 2)),
        # 152 septets, then an escape pair that must not be split: a third part.
        ("a" * 152 + "^" + "a" * 152, ("gsm7", 3)),
        ("Ça coûte 5€", ("ucs2", 1)),  # û is not GSM-7
        ("Café à Malmö, 5 £ ¥ §", ("gsm7", 1)),
        ("ΔΦΓΛΩΠΨΣΘΞ", ("gsm7", 1)),
        ("a" * 159 + "😀", ("ucs2", 3)),
        ("😀", ("ucs2", 1)),
        ("é" * 70, ("gsm7", 1)),
        ("ê" * 70, ("ucs2", 1)),
        ("ê" * 71, ("ucs2", 2)),
        ("ê" * 134, ("ucs2", 2)),
        ("ê" * 135, ("ucs2", 3)),
        ("😀" * 35, ("ucs2", 1)),  # 70 UTF-16 units
        ("😀" * 36, ("ucs2", 2)),
        ("ê" * 66 + "😀", ("ucs2", 1)),  # 68 units
        ("ê" * 69 + "😀", ("ucs2", 2)),  # 71 units
    ],
)
def test_sms_segments(text, expected):
    assert sms_segments(text) == expected


@pytest.mark.parametrize("char", list("^{}[]~\\|€\f"))
def test_gsm7_extension_characters_count_double(char):
    assert sms_segments(char * 80) == ("gsm7", 1)
    assert sms_segments(char * 80 + "a") == ("gsm7", 2)


def test_a_surrogate_pair_is_not_split_across_parts():
    # 66 units fill part one up to 66; the emoji (2 units) cannot take the 67th alone.
    assert sms_segments("ê" * 66 + "😀" + "ê" * 67) == ("ucs2", 3)
    assert sms_segments("ê" * 65 + "😀" + "ê" * 67) == ("ucs2", 2)


@given(st.text(alphabet="abc XYZ 019@£$_!?\n", max_size=2000))
def test_plain_gsm7_segments_match_the_formula(text):
    expected = 0 if not text else 1 if len(text) <= 160 else math.ceil(len(text) / 153)
    assert sms_segments(text) == ("gsm7", expected)


@given(st.text(alphabet="êж中ā", min_size=1, max_size=1000))
def test_plain_ucs2_segments_match_the_formula(text):
    expected = 1 if len(text) <= 70 else math.ceil(len(text) / 67)
    assert sms_segments(text) == ("ucs2", expected)


# --- channel limits -------------------------------------------------------------------


def test_push_payload_of_exactly_4096_bytes_passes_and_one_more_fails():
    data = {"order_id": 42}
    base = push_payload_size(Rendered(None, "", None, "Title"), data)
    fits = Rendered(None, "a" * (4096 - base), None, "Title")
    assert push_payload_size(fits, data) == 4096
    check_limits("push", fits, data)
    too_big = Rendered(None, "a" * (4097 - base), None, "Title")
    with pytest.raises(LimitError, match="push payload is 4097 bytes, over the limit of 4096"):
        check_limits("push", too_big, data)


def test_push_payload_size_counts_utf8_bytes_and_the_data():
    assert push_payload_size(Rendered(None, "é", None, None), {}) == len(
        '{"aps":{"alert":{"body":"é"}}}'.encode()
    )
    assert push_payload_size(Rendered(None, "x", None, None), {"k": "v"}) == len(
        '{"k":"v","aps":{"alert":{"body":"x"}}}'
    )


def test_push_data_cannot_replace_the_alert():
    with_aps = push_payload_size(Rendered(None, "x", None, None), {"aps": {}})
    assert with_aps == push_payload_size(Rendered(None, "x", None, None), {})


def test_push_data_that_is_not_json_is_a_limit_error():
    with pytest.raises(LimitError, match="cannot be encoded as JSON"):
        check_limits("push", Rendered(None, "x", None, None), {"n": float("nan")})


def test_sms_over_the_segment_limit_fails_with_a_clear_reason():
    eleven = Rendered(None, "a" * (153 * 10 + 1), None, None)
    with pytest.raises(LimitError, match=r"sms body is 11 segments \(gsm7\), over the limit of 10"):
        check_limits("sms", eleven, {})
    check_limits("sms", eleven, {}, max_sms_segments=11)
    check_limits("sms", Rendered(None, "a" * 1530, None, None), {})


def test_empty_sms_fails():
    with pytest.raises(LimitError, match="sms body is empty"):
        check_limits("sms", Rendered(None, "", None, None), {})


@pytest.mark.parametrize("subject", [None, "", "   \t"])
def test_email_needs_a_subject(subject):
    with pytest.raises(LimitError, match="email subject is missing or empty"):
        check_limits("email", Rendered(subject, "body", None, None), {})


def test_email_subject_must_be_one_line():
    with pytest.raises(LimitError, match="line break"):
        check_limits("email", Rendered("Hi\r\nBcc: x@example.com", "body", None, None), {})
    check_limits("email", Rendered("Hi", "body", None, None), {})


def test_limit_error_names_the_template_when_given():
    template = make("", channel="sms")
    with pytest.raises(LimitError) as caught:
        check_limits("sms", Rendered(None, "", None, None), {}, template=template)
    assert str(caught.value) == "template 'order_confirmed' v3 (fr): sms body is empty"
    assert isinstance(caught.value, TemplateError)


def test_unknown_channel():
    with pytest.raises(UnknownChannel, match="unknown channel 'fax'"):
        check_limits("fax", Rendered(None, "x", None, None), {})


# --- the worker's store of versions ----------------------------------------------------


def test_the_workers_versions_match_on_id_and_content_hash():
    from outbox.workers.delivery import TemplateVersions

    known = TemplateVersions()
    version = make("Hi")
    known.add([version])
    assert known.get(version.id, version.content_hash) is version
    # The same id with other contents (a recreated database reuses ids) is not known.
    assert known.get(version.id, content_hash(None, "Other", None, None)) is None
    assert known.get(None, None) is None
    assert known.missing([(version.id, version.content_hash), (None, None)]) == []
    never_added = make("x")
    wanted = [(version.id, "other"), (never_added.id, never_added.content_hash)]
    assert known.missing(wanted) == sorted([version.id, never_added.id])


def test_the_workers_versions_keep_all_of_a_claims_batch_past_their_size():
    from outbox.workers.delivery import TemplateVersions

    known = TemplateVersions(size=2)
    old = make("old")
    known.add([old])
    batch = [make("a"), make("b"), make("c")]
    known.add(batch)
    # Past the size, the old go and the whole new batch stays: the claim that read it
    # finds every version it asked for.
    assert all(known.get(v.id, v.content_hash) is v for v in batch)
    assert known.get(old.id, old.content_hash) is None
