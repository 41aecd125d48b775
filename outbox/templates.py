"""Template rendering: sandboxed Jinja2, strict about undefined values, cached by version id.

A template version is immutable, so its compiled form is cached by its database id.
Every field is a Jinja2 template rendered in a sandbox with ``StrictUndefined``
(a typo in a variable name is an error, not an empty string). Only an email's
HTML body is autoescaped; subjects, text bodies, SMS and push text are plain text.

Errors never carry the notification's data: a :class:`TemplateError` names the
template (key, version, locale), the field and line, and at most a *name* that is
written literally in the template source. Values, and keys computed from data,
are never echoed.

    OutboxError
    └── TemplateError     the template cannot be compiled or rendered with this data
        ├── TemplateTimeout  rendering ran past its time limit
        └── LimitError    it rendered, but the result is too big or incomplete for its
                          channel (SMS segments, push payload size, email subject);
                          see outbox/channel_limits.py

What a render may cost (time, output size, the text it builds on the way) is
bounded by outbox/template_limits.py; the sandbox below calls its checks, and
installs Jinja's built-ins checked by outbox/template_builtins.py.
"""

from __future__ import annotations

import hashlib
import threading
import traceback
import types
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import update_wrapper
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import missing
from markupsafe import Markup

from outbox import template_builtins
from outbox import template_limits as limits

# Defined in outbox.errors (the whole error tree in one place), re-exported here.
from outbox.errors import TemplateError, TemplateTimeout
from outbox.substitution import Substitution

__all__ = [
    "CHANNELS",
    "CompiledTemplate",
    "Rendered",
    "TemplateError",
    "TemplateTimeout",
    "TemplateVersion",
    "check_template",
    "compile_template",
    "content_hash",
    "is_compiled",
    "locale_chain",
    "render",
]

CHANNELS = ("email", "sms", "push")
CACHE_SIZE = 1024
FIELDS = ("subject", "body", "html_body", "title")


# --- template versions and their rendered form ------------------------------------


@dataclass(frozen=True)
class TemplateVersion:
    """One immutable version of a template, as stored in the templates table."""

    id: int
    key: str
    channel: str
    locale: str
    version: int
    subject: str | None
    body: str
    html_body: str | None
    title: str | None
    content_hash: str


@dataclass(frozen=True)
class Rendered:
    """A template rendered for one notification; a field is None if the template has none."""

    subject: str | None
    body: str
    html_body: str | None
    title: str | None


def content_hash(subject: str | None, body: str, html_body: str | None, title: str | None) -> str:
    """SHA-256 (hex) of a template's content, so pushing unchanged content adds no version.

    Canonical encoding, simple to reproduce in SQL or another language: the ASCII
    line ``outbox-template-v1``, then for each of subject, body, html_body, title
    either ``-`` (None) or a netstring ``<byte length>:<UTF-8 bytes>,``. None and ""
    hash differently, and no two field splits give the same bytes. Content is
    hashed exactly as given: no newline or Unicode normalisation.
    """
    encoded = bytearray(b"outbox-template-v1\n")
    for value in (subject, body, html_body, title):
        if value is None:
            encoded += b"-"
        else:
            raw = value.encode("utf-8")
            encoded += b"%d:%s," % (len(raw), raw)
    return hashlib.sha256(bytes(encoded)).hexdigest()


# --- locales -------------------------------------------------------------------------


def locale_chain(locale: str | None) -> list[str]:
    """The locales to try in order, most specific first, always ending in ``"default"``.

    ``"fr-CA"``, ``"fr_ca"`` and ``"fr_CA.UTF-8"`` all give ``["fr-CA", "fr", "default"]``;
    ``"zh-hant-tw"`` gives ``["zh-Hant-TW", "zh-Hant", "zh", "default"]``. Case follows
    BCP 47 (language lower, script title, region upper). None, ``""``, ``"default"``,
    ``"C"`` and ``"POSIX"`` give ``["default"]``. Raises ValueError for a value that is
    not a locale, naming it.
    """
    if locale is None:
        return ["default"]
    # POSIX locales (from an environment variable) carry ".codeset" and "@modifier".
    cleaned = locale.strip().split(".", 1)[0].split("@", 1)[0]
    if cleaned.lower() in ("", "default", "c", "posix"):
        return ["default"]
    parts = cleaned.replace("_", "-").split("-")
    language = parts[0]
    if not (2 <= len(language) <= 8 and language.isascii() and language.isalpha()):
        raise ValueError(f"invalid locale {locale!r}: expected a language like 'fr' or 'fr-CA'")
    tags = [language.lower()]
    for part in parts[1:]:
        if not (1 <= len(part) <= 8 and part.isascii() and part.isalnum()):
            raise ValueError(f"invalid locale {locale!r}: bad subtag {part!r}")
        if len(part) == 4 and part.isalpha():
            tags.append(part.title())  # script: Hant, Latn
        elif (len(part) == 2 and part.isalpha()) or (len(part) == 3 and part.isdigit()):
            tags.append(part.upper())  # region: CA, 419
        else:
            tags.append(part.lower())  # variant or extension
    chain = ["-".join(tags[:n]) for n in range(len(tags), 0, -1)]
    return [*chain, "default"]


# --- the sandbox -----------------------------------------------------------------------

# What a template may cost (time, output, the text it builds): outbox/template_limits.py.
_SandboxLimit = limits.LimitExceeded


class _UndefinedAccess(UndefinedError):
    """A missing value was used; carries what the template asked for, never the data."""

    def __init__(self, message: str, *, name: Any, has_parent: bool, hint: str | None) -> None:
        super().__init__(message)
        self.name = name
        self.has_parent = has_parent
        self.hint = hint


class _UnsafeAccess(SecurityError):
    """The sandbox blocked access to an internal attribute (``__class__``, ``mro``...)."""

    def __init__(self, message: str, *, name: Any) -> None:
        super().__init__(message)
        self.name = name


class _Undefined(StrictUndefined):
    """StrictUndefined that raises our structured exceptions.

    Jinja builds its error text from the parent object and the key, and the key may
    come from the notification's data. Raising exceptions that carry the name as a
    separate attribute lets :func:`render` decide what is safe to show.
    """

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[Exception] = UndefinedError,
    ) -> None:
        has_parent = obj is not missing
        factory: Callable[[str], Exception]
        if issubclass(exc, SecurityError):

            def factory(message: str) -> Exception:
                return _UnsafeAccess(message, name=name)
        else:

            def factory(message: str) -> Exception:
                return _UndefinedAccess(message, name=name, has_parent=has_parent, hint=hint)

        # Jinja only ever calls the stored "exception class" with the message.
        super().__init__(hint, obj, name, factory)  # type: ignore[arg-type]


class _Formatter(SandboxedFormatter):
    """``str.format`` in templates: widths and the text of each field within the limits."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        if format_spec:
            limits.check_format_spec(format_spec)
        if not isinstance(value, str):
            limits.text_size(value)
        return limits.produced(super().format_field(value, format_spec))


class _EscapeFormatter(_Formatter, SandboxedEscapeFormatter):
    """The same for ``Markup.format`` (the HTML body): fields are escaped."""


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with ``~`` checked before it joins, and slices (which
    bypass the sandbox's getitem) counted as the copies they are (see template_limits)."""

    @optimizeconst
    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        self.write("environment.produced(")
        super().visit_Getitem(node, frame)
        self.write(")")

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = (
                "(environment.join_markup if context.eval_ctx.volatile else environment.join_text)"
            )
        elif frame.eval_ctx.autoescape:
            join = "environment.join_markup"
        else:
            join = "environment.join_text"
        self.write(f"{join}((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


_NUMBERS = frozenset({int, float})


class _Sandbox(ImmutableSandboxedEnvironment):
    """Immutable sandbox (templates cannot change the data) within the limits of
    outbox/template_limits.py: every hook below counts a step against the deadline,
    and refuses what would build a value over the size limit before building it."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    # Every piece of output, block and macro goes through it.
    concat = staticmethod(limits.concat)
    join_text = staticmethod(limits.join_text)
    join_markup = staticmethod(limits.join_markup)
    produced = staticmethod(limits.produced)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = template_builtins.guarded_filters()
        self.globals["lipsum"] = template_builtins.lipsum

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "+" and type(left) in _NUMBERS and type(right) in _NUMBERS:
            return left + right  # the common case: a total
        limits.check_binop(operator, left, right)
        return limits.produced(self.binop_table[operator](left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        limits.tick()
        checked = template_builtins.method_call(__obj)
        if checked is not None:
            return limits.produced(checked(*args, **kwargs))
        return limits.produced(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # Jinja's own wrapper, with our formatters (the only change).
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or (
            value.__name__ not in ("format", "format_map")
        ):
            return None
        owner: Any = value.__self__
        if not isinstance(owner, str):
            return None
        str_type: type[str] = type(owner)
        is_format_map = value.__name__ == "format_map"
        formatter: SandboxedFormatter
        if isinstance(owner, Markup):
            formatter = _EscapeFormatter(self, escape=owner.escape)
        else:
            formatter = _Formatter(self)
        vformat = formatter.vformat

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs = args[0]
                args = ()
            return str_type(vformat(owner, args, kwargs))

        return update_wrapper(wrapper, value)


def _finalize(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    # A JSON null in the data should print as nothing, not as "None".
    if value is None:
        return ""
    limits.text_size(value)  # a container prints its repr: not past the size limit
    return value


_PLAIN = frozenset({str, int, float, bool})


_TEXT_ENV = _Sandbox(undefined=_Undefined, autoescape=False, finalize=_finalize)
_HTML_ENV = _Sandbox(undefined=_Undefined, autoescape=True, finalize=_finalize)


# --- compiling, with a cache by version id ---------------------------------------------


@dataclass(frozen=True)
class _Field:
    template: Template
    # Names written literally in the source (variables, attributes, constant subscripts):
    # only these may appear in an error message.
    literals: frozenset[Any]
    # Static paths ("order.total", "items[0]") by their last name, for clearer messages.
    paths: Mapping[Any, frozenset[str]]
    # The fast path when the field only prints variables (outbox/substitution.py).
    substitution: Substitution | None


@dataclass(frozen=True)
class CompiledTemplate:
    """A template version compiled once; obtained from :func:`compile_template`."""

    version: TemplateVersion
    fields: Mapping[str, _Field]


def _static_path(node: nodes.Node) -> tuple[str, Any] | None:
    """``order.items[0].sku`` as text and its last name, or None if any part is computed."""
    if isinstance(node, nodes.Name):
        return node.name, node.name
    if isinstance(node, nodes.Getattr):
        parent = _static_path(node.node)
        return (f"{parent[0]}.{node.attr}", node.attr) if parent else None
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        parent = _static_path(node.node)
        return (f"{parent[0]}[{node.arg.value!r}]", node.arg.value) if parent else None
    return None


def _compile_field(env: _Sandbox, source: str) -> _Field:
    ast = env.parse(source)
    # There is no loader: a template version is self-contained, so that its content
    # hash covers everything it renders.
    for loading in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        raise TemplateSyntaxError("extends, include and import are not supported", loading.lineno)
    literals: set[Any] = set()
    paths: dict[Any, set[str]] = {}
    for node in ast.find_all((nodes.Name, nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Name):
            literals.add(node.name)
        elif isinstance(node, nodes.Getattr):
            literals.add(node.attr)
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str | int)
        ):
            literals.add(node.arg.value)
        path = _static_path(node)
        if path is not None:
            paths.setdefault(path[1], set()).add(path[0])
    # Before compiling: the compiler may rewrite the tree.
    substitution = Substitution.from_ast(ast, autoescape=env.autoescape is True)
    # Every loop counts its steps against the render's deadline (template_limits.guard_loop).
    for loop in ast.find_all(nodes.For):
        loop.iter = nodes.Filter(
            loop.iter, limits.LOOP_FILTER, [], [], None, None, lineno=loop.iter.lineno
        )
    return _Field(
        template=env.from_string(ast),
        literals=frozenset(literals),
        paths={name: frozenset(found) for name, found in paths.items()},
        substitution=substitution,
    )


def _sources(template: TemplateVersion) -> tuple[str | None, ...]:
    return tuple(getattr(template, name) for name in FIELDS)


class _LRU:
    """A bounded, thread-safe cache of compiled templates by version id."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[int, CompiledTemplate] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, template: TemplateVersion) -> CompiledTemplate | None:
        with self._lock:
            entry = self._entries.get(template.id)
            # Ids are never reused for other content in one database, but a process
            # can outlive a database (tests recreate it): compare the sources too.
            if entry is None or (
                entry.version is not template and _sources(entry.version) != _sources(template)
            ):
                return None
            self._entries.move_to_end(template.id)
            return entry

    def put(self, compiled: CompiledTemplate) -> None:
        with self._lock:
            self._entries[compiled.version.id] = compiled
            self._entries.move_to_end(compiled.version.id)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_CACHE = _LRU(CACHE_SIZE)


def _error(template: TemplateVersion, reason: str, **where: Any) -> TemplateError:
    return TemplateError(
        reason, key=template.key, version=template.version, locale=template.locale, **where
    )


def compile_template(template: TemplateVersion) -> CompiledTemplate:
    """Compile every field of a template version, or return it from the cache.

    Raises TemplateError for a syntax error or a field over
    :data:`~outbox.template_limits.MAX_SOURCE_BYTES` (with field and line); call
    it when a template is pushed to refuse broken templates before any
    notification uses them.
    """
    cached = _CACHE.get(template)
    if cached is not None:
        return cached
    compiled = CompiledTemplate(version=template, fields=_compile(template))
    _CACHE.put(compiled)
    return compiled


def check_template(template: TemplateVersion) -> None:
    """Raise TemplateError if a field of ``template`` does not compile or is too large.

    Like :func:`compile_template`, without keeping the result (for a template that
    is being created, before it has an id).
    """
    _compile(template)


def is_compiled(template: TemplateVersion) -> bool:
    """Whether :func:`render` will find ``template`` compiled (so it starts at once)."""
    return _CACHE.get(template) is not None


def _compile(template: TemplateVersion) -> dict[str, _Field]:
    fields: dict[str, _Field] = {}
    for name, source in zip(FIELDS, _sources(template), strict=True):
        if source is None:
            continue
        size = len(source.encode("utf-8", "surrogatepass"))
        if size > limits.MAX_SOURCE_BYTES:
            raise _error(
                template,
                f"source is {size:,} bytes, over the limit of {limits.MAX_SOURCE_BYTES:,} "
                f"({limits.MAX_SOURCE_BYTES // 1024} KiB)",
                field=name,
            )
        env = _HTML_ENV if name == "html_body" else _TEXT_ENV
        try:
            fields[name] = _compile_field(env, source)
        except TemplateSyntaxError as exc:
            # The message is about the template source, never about data.
            raise _error(
                template, f"syntax error: {exc.message}", field=name, line=exc.lineno
            ) from exc
        except RecursionError:
            raise _error(template, "nested too deeply to compile", field=name) from None
    return fields


# --- rendering -------------------------------------------------------------------------


def _template_line(exc: BaseException) -> int | None:
    # Jinja rewrites tracebacks so template frames carry the template's own line numbers.
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<template>"]
    return frames[-1].lineno if frames else None


def _describe(exc: Exception, field: _Field) -> tuple[str, str | None]:
    """A data-free reason for a render failure, and the variable name if it is safe to show."""
    if isinstance(exc, _UnsafeAccess):
        if exc.name in field.literals:
            return f"access to {exc.name!r} is not allowed (sandbox)", None
        return "access to an internal attribute is not allowed (sandbox)", None
    if isinstance(exc, _SandboxLimit):
        return f"{exc.message} (sandbox)", None
    if isinstance(exc, SecurityError):
        return "operation not allowed (sandbox)", None
    if isinstance(exc, RecursionError):
        return "recursion too deep (sandbox)", None
    if isinstance(exc, _UndefinedAccess):
        if exc.hint:
            # Jinja's own hints ("No first item, sequence was empty.") hold no data.
            return f"undefined value: {exc.hint}", None
        if exc.name not in field.literals:
            return "undefined item (key not shown: it may come from the data)", None
        paths = field.paths.get(exc.name, frozenset())
        if not exc.has_parent:
            return f"undefined variable {exc.name!r}", str(exc.name)
        if len(paths) == 1:
            (path,) = paths
            return f"undefined variable {path!r}", path
        return f"undefined attribute {exc.name!r}", str(exc.name)
    # Other exceptions' messages may quote values (KeyError, ValueError): name the type only.
    return f"rendering failed ({type(exc).__name__})", None


def render(
    template: TemplateVersion,
    data: Mapping[str, Any],
    *,
    timeout: float = limits.RENDER_TIMEOUT_SECONDS,
) -> Rendered:
    """Render every field of ``template`` with ``data`` as the template variables.

    Raises TemplateError naming the template, field, line and (for undefined values)
    the variable; the notification's data never appears in the message. Rendering
    stops with :class:`~outbox.errors.TemplateTimeout` after ``timeout`` seconds, and
    with a TemplateError when the template builds text over the limits of
    outbox/template_limits.py.
    """
    compiled = compile_template(template)
    out: dict[str, str | None] = dict.fromkeys(FIELDS)
    previous: limits.Budget | None = None
    try:
        for name, field in compiled.fields.items():
            if field.substitution is not None:
                text = field.substitution.render(data)
                if text is not None:
                    out[name] = text
                    continue
            if previous is None:
                # Only Jinja needs a budget: plain substitution is linear in its output.
                previous, limits.current.budget = limits.current.budget, limits.Budget(timeout)
            try:
                out[name] = field.template.render(data)
            except Exception as exc:
                reason, variable = _describe(exc, field)
                line = _template_line(exc)
                # Suppress the chain: the original message may quote the notification's
                # data, and errors end up in logs and delivery events.
                error = TemplateTimeout if isinstance(exc, limits.TimeLimit) else TemplateError
                raise error(
                    reason,
                    key=template.key,
                    version=template.version,
                    locale=template.locale,
                    field=name,
                    line=line,
                    variable=variable,
                ) from None
    finally:
        if previous is not None:
            limits.current.budget = previous
    body = out["body"]
    assert body is not None  # body is required, so always compiled
    return Rendered(
        subject=out["subject"], body=body, html_body=out["html_body"], title=out["title"]
    )
