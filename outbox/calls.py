"""What each public API call is: its checked arguments, its named query, its result.

``outbox.api`` (sync) and ``outbox.aio`` (async) differ only in how they run a
query on the caller's connection. Everything else about a call — its signature,
its docstring, the validation of its arguments and the query it names — is
written once, here, as a function that returns a :class:`Call`; each module
turns these descriptions into its own functions.

Validation happens in Python before the round trip, for what the SQL functions
cannot say clearly or at all: types (``message_id=42``, ``priority=True``, a
naive ``send_at``), NUL characters (psycopg and PostgreSQL text refuse them),
and JSON that jsonb refuses or that Python cannot serialise (NaN, a set, a
datetime, nesting past :data:`MAX_DATA_DEPTH`). Such an error never touches the
connection, so the caller's transaction stays usable. What the database knows
best (unknown recipient or template, malformed addresses, category names,
message id length, blank ids, and the one-year horizon of ``send_at`` and
``expires_at``, which is measured on the database's clock) stays in the SQL
functions, which name the field too; :func:`translate` turns their errors into
the same :class:`~outbox.ValidationError` tree.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any, Generic, TypeVar

from outbox import errors
from outbox.templates import TemplateError, TemplateVersion, check_template

R = TypeVar("R")

#: How deep ``data`` may nest (the object itself is level 1). Deeper JSON is
#: almost always a bug (a cycle, an ORM object graph), and Python's json module
#: and PostgreSQL's jsonb parser both fail on very deep input with errors that
#: name nothing.
MAX_DATA_DEPTH = 32

#: The size limit on ``data`` in bytes: the one ``outbox.enqueue`` enforces on
#: ``octet_length(data::text)`` (sql/functions/enqueue.sql). We measure the same
#: text form (UTF-8, ", " and ": " separators) so that data refused here would be
#: refused there, before any round trip.
MAX_DATA_BYTES = 65536

#: The priority range ``outbox.enqueue`` enforces (sql/functions/enqueue.sql);
#: checked here as well so that a huge integer is not a raw "integer out of
#: range" from the driver.
PRIORITY_RANGE = range(-100, 101)

_INT4_MAX = 2**31 - 1
# Python refuses to print integers of more than 4300 digits (a ValueError from
# json.dumps that names nothing); 14 000 bits is just under that.
_MAX_INT_BITS = 14_000


@dataclass(frozen=True)
class Call(Generic[R]):
    """One API call, checked and ready to run: a named query, its parameters, and
    how to turn the query's single value into the function's result.

    ``query`` is None when there is nothing to ask the database (``enqueue_many``
    with no items); the result is then ``result(None)``.
    """

    query: str | None
    params: Mapping[str, Any]
    result: Callable[[Any], R]


# -- running a call: the parts that do not depend on sync or async -----------------

# SQLSTATEs raised by the SQL functions (class OB), mapped to our exceptions.
_SQLSTATE_ERRORS: dict[str, type[errors.OutboxError]] = {
    "OB001": errors.ValidationError,
    "OB002": errors.UnknownRecipient,
    "OB003": errors.UnknownTemplate,
    "OB004": errors.UnknownChannel,
    "OB005": errors.IllegalTransition,
    "OB006": errors.NotFound,
}


def translate(exc: BaseException) -> errors.OutboxError | None:
    """Our exception for a driver error raised by an SQL function, or None if it is not one."""
    # psycopg 3 spells it sqlstate, psycopg2 pgcode.
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    cls = _SQLSTATE_ERRORS.get(state) if isinstance(state, str) else None
    if cls is None:
        return None
    diag = getattr(exc, "diag", None)
    message = getattr(diag, "message_primary", None) or str(exc)
    if issubclass(cls, errors.ValidationError):
        return cls(message, field=getattr(diag, "column_name", None))
    return cls(message)


@contextlib.contextmanager
def translating() -> Iterator[None]:
    """Raise our exception (see :func:`translate`) for a driver error raised inside."""
    try:
        yield
    except Exception as exc:
        translated = translate(exc)
        if translated is not None:
            raise translated from exc
        raise


def single_value(row: Any) -> Any:
    """The one column of a query's one row (None for no row)."""
    if row is None:
        return None
    # The caller's connection may use any row factory (tuples, dicts, namedtuples).
    return next(iter(row.values())) if isinstance(row, Mapping) else row[0]


def signature_with_conn(describe: Callable[..., Any]) -> inspect.Signature:
    """``describe``'s signature with the caller's connection first, for help() and IDEs."""
    sig = inspect.signature(describe)
    conn = inspect.Parameter("conn", inspect.Parameter.POSITIONAL_ONLY, annotation="Any")
    returns = sig.return_annotation
    if isinstance(returns, str) and returns.startswith("Call[") and returns.endswith("]"):
        returns = returns[len("Call[") : -1]
    return sig.replace(parameters=[conn, *sig.parameters.values()], return_annotation=returns)


# -- checks ---------------------------------------------------------------------------


def _show(value: Any) -> str:
    """The value for an error message: its type and a bounded repr."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _fail(field: str, problem: str) -> errors.ValidationError:
    return errors.ValidationError(f"{field} {problem}", field=field)


def _check_chars(value: str, where: str, field: str) -> None:
    """Refuse characters PostgreSQL text and jsonb cannot hold."""
    nul = value.find("\x00")
    if nul >= 0:
        raise errors.ValidationError(
            f"{where} contains a NUL character (\\x00) at position {nul}, "
            "which PostgreSQL text cannot hold",
            field=field,
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise errors.ValidationError(
            f"{where} contains a lone surrogate {value[exc.start]!r} at position {exc.start}, "
            "which is not valid UTF-8",
            field=field,
        ) from None


def _text(value: Any, field: str) -> str:
    """A required text argument."""
    if not isinstance(value, str):
        raise _fail(field, f"must be a string, got {_show(value)}")
    _check_chars(value, field, field)
    return value


def _optional_text(value: Any, field: str) -> str | None:
    return None if value is None else _text(value, field)


def _flag(value: Any, field: str) -> bool:
    # 1 and 0 are refused on purpose: a bool column fed an int is usually a
    # swapped argument, not a flag.
    if not isinstance(value, bool):
        raise _fail(field, f"must be True or False, got {_show(value)}")
    return value


def _integer(value: Any, field: str, allowed: range) -> int:
    if isinstance(value, bool):
        raise _fail(field, f"must be an integer, got {_show(value)}")
    try:
        number = operator.index(value)  # int, or an integer type such as numpy.int64
    except TypeError:
        raise _fail(field, f"must be an integer, got {_show(value)}") from None
    if number not in allowed:
        raise _fail(field, f"must be between {allowed.start} and {allowed.stop - 1}, got {number}")
    return number


def _moment(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise _fail(field, f"must be a datetime with a time zone, got {_show(value)}")
    if value.utcoffset() is None:
        # A naive datetime would be read in the database session's TimeZone,
        # which is rarely what the caller had in mind.
        raise _fail(
            field,
            f"is a naive datetime ({value.isoformat()}); give it a time zone, "
            "e.g. datetime.now(timezone.utc)",
        )
    return value


def _local_time(value: Any, field: str) -> time:
    if not isinstance(value, time):
        raise _fail(field, f"must be a datetime.time, got {_show(value)}")
    if value.tzinfo is not None:
        # Quiet hours are wall-clock times in the recipient's own time zone.
        raise _fail(field, f"must be a local time without tzinfo, got {value.isoformat()}")
    return value


def _channels(value: Any, field: str = "channels") -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [_text(value, field)]
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise _fail(field, f"must be a channel name or a list of them, got {_show(value)}")
    items = sorted(value) if isinstance(value, (set, frozenset)) and _all_str(value) else value
    return [_text(item, f"{field}[{i}]") for i, item in enumerate(items)]


def _all_str(values: Iterable[Any]) -> bool:
    return all(isinstance(v, str) for v in values)


def _json_plain(value: Any, path: str, depth: int) -> Any:
    """``value`` as plain JSON types (dict, list, str, int, float, bool, None), or a
    ValidationError naming the path of the first value JSON or jsonb cannot hold."""
    if value is None or isinstance(value, (bool, str)):
        if isinstance(value, str):
            _check_chars(value, path, "data")
        return value
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise errors.ValidationError(f"{path} is an integer of over 4000 digits", field="data")
        return int(value)  # an IntEnum would otherwise be dumped by name by some encoders
    if isinstance(value, float):
        if not math.isfinite(value):
            raise errors.ValidationError(
                f"{path} is {value!r}, which JSON cannot hold (jsonb refuses NaN and Infinity)",
                field="data",
            )
        return value
    if isinstance(value, (Mapping, list, tuple)):
        if depth >= MAX_DATA_DEPTH:
            raise errors.ValidationError(
                f"{path} nests deeper than {MAX_DATA_DEPTH} levels", field="data"
            )
        if isinstance(value, Mapping):
            plain = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise errors.ValidationError(
                        f"{path} has a key {_show(key)}; JSON object keys must be strings",
                        field="data",
                    )
                _check_chars(key, f"{path} key {key!r}", "data")
                plain[key] = _json_plain(item, f"{path}[{key!r}]", depth + 1)
            return plain
        return [_json_plain(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    hint = f"; pass {path}.isoformat()" if isinstance(value, (datetime, time)) else ""
    raise errors.ValidationError(
        f"{path} is a {type(value).__name__}, which is not JSON-serialisable{hint}", field="data"
    )


def _data(value: Any) -> str:
    """``data`` as the JSON text sent to the database."""
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        # The SQL function says "must be a JSON object, got array" too, but only
        # for what survives serialisation, and after a round trip.
        raise _fail("data", f"must be a JSON object (a dict), got {_show(value)}")
    text = json.dumps(
        _json_plain(value, "data", 0), ensure_ascii=False, allow_nan=False, separators=(", ", ": ")
    )
    size = len(text.encode("utf-8"))
    if size > MAX_DATA_BYTES:
        raise _fail("data", f"is {size} bytes as JSON, the limit is {MAX_DATA_BYTES}")
    return text


# -- the calls ------------------------------------------------------------------------


def enqueue(
    message_id: str,
    *,
    template: str,
    recipient: str | None = None,
    data: Mapping[str, Any] | None = None,
    channels: str | Sequence[str] | None = None,
    address: str | None = None,
    category: str | None = None,
    priority: int = 0,
    send_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> Call[int]:
    """Enqueue a notification in the caller's transaction; return the notification id.

    The id returned is ``outbox.notifications.id`` (an ``int``), the handle that
    ``outbox inspect`` and the views use. ``message_id`` is the idempotency key:
    enqueueing it again returns the first notification's id and changes nothing,
    whatever the rest of the repeat holds; a malformed repeat still raises (see
    docs/python-api.md, "Idempotency", for repeats and concurrent enqueues).

    Give ``recipient`` (an app user id registered with :func:`upsert_recipient`)
    or ``address`` (an email address or E.164 number, one channel). ``channels``
    (a name or a list of ``"email"``, ``"sms"``, ``"push"``) defaults to every
    channel the template has and the recipient can receive; push fans out to each
    active device. ``data`` is a JSON object (str keys; str, int, finite float,
    bool, None, list, dict values; at most 32 levels and 65536 bytes) for the
    template. ``priority`` is -100 to 100 (higher first). ``send_at`` and
    ``expires_at`` are timezone-aware datetimes: ``send_at`` within a year of now
    (either side; ``None`` sends now), ``expires_at`` after it, at most a year
    after the send and at most a year ago (one in the past is recorded expired).

    Raises :class:`~outbox.ValidationError` (or a subclass) naming the field.
    """
    return Call(
        "enqueue",
        _enqueue_params(
            message_id,
            template=template,
            recipient=recipient,
            data=data,
            channels=channels,
            address=address,
            category=category,
            priority=priority,
            send_at=send_at,
            expires_at=expires_at,
        ),
        int,
    )


def _enqueue_params(
    message_id: Any,
    *,
    template: Any,
    recipient: Any = None,
    data: Any = None,
    channels: Any = None,
    address: Any = None,
    category: Any = None,
    priority: Any = 0,
    send_at: Any = None,
    expires_at: Any = None,
) -> dict[str, Any]:
    return {
        "message_id": _text(message_id, "message_id"),
        "template": _text(template, "template"),
        "recipient": _optional_text(recipient, "recipient"),
        "data": _data(data),
        "channels": _channels(channels),
        "address": _optional_text(address, "address"),
        "category": _optional_text(category, "category"),
        "priority": _integer(priority, "priority", PRIORITY_RANGE),
        "send_at": _moment(send_at, "send_at"),
        "expires_at": _moment(expires_at, "expires_at"),
    }


ENQUEUE_FIELDS = frozenset(name for name in inspect.signature(_enqueue_params).parameters)


def enqueue_many(notifications: Iterable[Mapping[str, Any]]) -> Call[list[int]]:
    """Enqueue many notifications in one round trip; return their notification ids in order.

    Each item is a mapping with :func:`enqueue`'s arguments as keys
    (``message_id``, ``template``, ``recipient``, ``data``, ...), checked the same
    way. One bad item fails the whole call and nothing is written; the error's
    message starts with the item's position (``notifications[3]: ...`` when
    refused here, ``outbox.enqueue_many: items[3]: ...`` when refused by the SQL
    function: the same position, from 0) and its ``field`` is the argument's name.
    """
    if isinstance(notifications, (str, bytes, Mapping)) or not isinstance(notifications, Iterable):
        raise _fail("notifications", f"must be a list of mappings, got {_show(notifications)}")
    items: list[str] = []
    for i, item in enumerate(notifications):
        items.append(_enqueue_many_item(i, item))
    if not items:
        return Call(None, {}, lambda _: [])
    # Each item's data is already JSON text; splice rather than parse it again.
    return Call("enqueue_many", {"items": "[" + ", ".join(items) + "]"}, list)


def _enqueue_many_item(i: int, item: Any) -> str:
    """Item ``i`` of enqueue_many as a JSON object for ``outbox.enqueue_many``."""
    params = _item_params(i, item)
    data = params.pop("data")
    for moment in ("send_at", "expires_at"):
        if params[moment] is not None:
            params[moment] = params[moment].isoformat()
    return json.dumps(params, ensure_ascii=False)[:-1] + ', "data": ' + data + "}"


def _item_params(i: int, item: Any) -> dict[str, Any]:
    """Item ``i`` of a bulk call checked as :func:`enqueue` checks its arguments;
    errors start with ``notifications[i]``."""
    where = f"notifications[{i}]"
    if not isinstance(item, Mapping):
        raise errors.ValidationError(
            f"{where} must be a mapping of enqueue's arguments, got {_show(item)}",
            field="notifications",
        )
    unknown = sorted(str(k) for k in item if k not in ENQUEUE_FIELDS)
    if unknown:
        raise errors.ValidationError(
            f"{where} has unknown field(s) {unknown}; expected some of {sorted(ENQUEUE_FIELDS)}",
            field=unknown[0],
        )
    for required in ("message_id", "template"):
        if required not in item:
            raise errors.ValidationError(f"{where} has no {required}", field=required)
    try:
        return _enqueue_params(**item)
    except errors.ValidationError as exc:
        raise errors.ValidationError(f"{where}: {exc}", field=exc.field) from None


#: How many notifications :func:`outbox.enqueue_stream` copies and enqueues at a
#: time: big enough that a chunk's statements cost little per notification, small
#: enough that a chunk's rows (and ids) stay a few hundred KiB.
STREAM_CHUNK = 1000

#: The staging table's columns after the position, in COPY order: enqueue's
#: arguments (``outbox.enqueue_item``'s fields, sql/functions/enqueue.sql).
STREAM_COLUMNS = tuple(inspect.signature(_enqueue_params).parameters)


@dataclass(frozen=True)
class Stream:
    """A streaming enqueue, described: its chunks (checked lazily, one at a time, as
    the runner asks for them) and who to tell as each is done.

    Each chunk is ``(first, rows)``: the index in the whole stream of its first
    item, and its rows for the staging table (position, then
    :data:`STREAM_COLUMNS`). The runner stages a temporary table
    (``stream_stage``), and per chunk COPYs the rows in (``stream_copy``), runs
    ``stream_chunk`` with ``first`` and calls ``progress`` with the count so far;
    all of it inside a savepoint, rolled back on any error.
    """

    chunks: Iterator[tuple[int, list[tuple[Any, ...]]]]
    progress: Callable[[int], object] | None


def enqueue_stream(
    notifications: Iterable[Mapping[str, Any]],
    *,
    chunk_size: int = STREAM_CHUNK,
    progress: Callable[[int], object] | None = None,
) -> Stream:
    """Enqueue notifications from any iterable (a generator, a query's cursor...),
    streamed to the database in chunks; return how many were enqueued.

    Each item is a mapping with :func:`enqueue`'s arguments as keys, checked the
    same way, as for :func:`enqueue_many`; repeats of a message id (stored, or
    earlier in the stream) change nothing, as always. Items are read
    ``chunk_size`` at a time, copied (COPY) into a temporary table and enqueued by
    one set-based call per chunk, so memory stays bounded however long the stream
    is. ``progress``, if given, is called with the number of items done so far
    after each chunk.

    It runs in the caller's transaction (which must not be in autocommit mode)
    and commits nothing. A bad item raises :class:`~outbox.ValidationError` (or a
    subclass) naming the field and the item's index in the whole stream
    (``notifications[123456]: ...`` when refused in Python,
    ``outbox.enqueue_stream: items[123456]: ...`` when refused by the database),
    and everything the call wrote is undone: it runs inside a savepoint, so the
    caller's transaction stays usable.
    """
    if isinstance(notifications, (str, bytes, Mapping)) or not isinstance(notifications, Iterable):
        raise _fail("notifications", f"must be an iterable of mappings, got {_show(notifications)}")
    size = _integer(chunk_size, "chunk_size", range(1, 100_001))
    if progress is not None and not callable(progress):
        raise _fail("progress", f"must be callable, got {_show(progress)}")
    return Stream(_stream_chunks(notifications, size), progress)


#: The item keys the plain-item path of :func:`_plain_stream_row` takes.
_PLAIN_KEYS = frozenset({"message_id", "template", "recipient", "address", "data", "category"})
#: :func:`_data`'s encoding, made once (json.dumps with options makes an encoder per call).
_PLAIN_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def _plain_str(value: Any) -> bool:
    """Whether ``value`` is a str that every text check accepts as it is: ASCII
    (so valid UTF-8) without a NUL."""
    return type(value) is str and value.isascii() and "\x00" not in value


def _plain_scalar(value: Any) -> bool:
    """Whether ``value`` is a JSON scalar that :func:`_json_plain` keeps as it is."""
    kind = type(value)
    if kind is str:
        return _plain_str(value)
    if kind is int:
        return value.bit_length() <= _MAX_INT_BITS
    if kind is float:
        return math.isfinite(value)
    return value is None or kind is bool


def _plain_stream_row(i: int, item: Any) -> tuple[Any, ...] | None:
    """Item ``i``'s staging row, for the common item that needs none of the general
    checks' work (a dict of ASCII strings and flat ``data`` of ASCII strings and
    plain numbers, no channels, times or priority); ``None`` for any other item,
    which :func:`_item_params` then checks (and refuses, with its message, if bad).

    What it returns is what the general path returns for the same item: each
    condition below is one under which that path's check passes and leaves the
    value unchanged. It exists for speed: the general path costs about 15 ms per
    1000 items of a stream, this one a third of that.
    """
    if type(item) is not dict or not item.keys() <= _PLAIN_KEYS:
        return None
    message_id = item.get("message_id")
    template = item.get("template")
    recipient = item.get("recipient")
    address = item.get("address")
    category = item.get("category")
    data = item.get("data")
    if not (
        _plain_str(message_id)
        and _plain_str(template)
        and (recipient is None or _plain_str(recipient))
        and (address is None or _plain_str(address))
        and (category is None or _plain_str(category))
    ):
        return None
    if data is None:
        text = "{}"
    elif type(data) is dict and all(_plain_str(k) and _plain_scalar(v) for k, v in data.items()):
        # ASCII only, so the length in characters is the length in bytes.
        text = _PLAIN_JSON.encode(data)
        if len(text) > MAX_DATA_BYTES:
            return None
    else:
        return None
    return (i, message_id, template, recipient, text, None, address, category, 0, None, None)


def _stream_chunks(
    notifications: Iterable[Mapping[str, Any]], size: int
) -> Iterator[tuple[int, list[tuple[Any, ...]]]]:
    chunk: list[tuple[Any, ...]] = []
    first = 0
    for i, item in enumerate(notifications):
        row = _plain_stream_row(i, item)
        if row is None:
            params = _item_params(i, item)
            row = (i, *(params[name] for name in STREAM_COLUMNS))
        chunk.append(row)
        if len(chunk) == size:
            yield first, chunk
            first, chunk = i + 1, []
    if chunk:
        yield first, chunk


def upsert_recipient(
    recipient: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    locale: str | None = None,
    timezone: str | None = None,
    quiet_hours: tuple[time, time] | None = None,
) -> Call[int]:
    """Create or update the recipient with the app's user id ``recipient``; return its id.

    ``None`` leaves a field unchanged; ``""`` clears email or phone. ``phone`` is
    E.164 (``+14155550123``), ``locale`` a BCP 47 tag such as ``"fr"`` or
    ``"fr-CA"`` (or ``"default"``; ``"fr_ca"`` is stored as ``"fr-CA"``, the form
    templates are matched on), ``timezone`` an IANA name, ``quiet_hours`` a
    (start, end) pair of local ``datetime.time`` values that may wrap midnight.
    A blank ``recipient`` (white space only) is refused.
    """
    if quiet_hours is None:
        start = end = None
    elif isinstance(quiet_hours, (tuple, list)) and len(quiet_hours) == 2:
        start = _local_time(quiet_hours[0], "quiet_hours")
        end = _local_time(quiet_hours[1], "quiet_hours")
    else:
        raise _fail(
            "quiet_hours", f"must be a (start, end) pair of times, got {_show(quiet_hours)}"
        )
    return Call(
        "upsert_recipient",
        {
            "recipient": _text(recipient, "recipient"),
            "email": _optional_text(email, "email"),
            "phone": _optional_text(phone, "phone"),
            "locale": _optional_text(locale, "locale"),
            "timezone": _optional_text(timezone, "timezone"),
            "quiet_start": start,
            "quiet_end": end,
        },
        int,
    )


def register_device(
    recipient: str, token: str, platform: str, *, environment: str = "production"
) -> Call[int]:
    """Register push ``token`` (``platform`` apns or fcm) for ``recipient``; return the device id.

    A token already known moves to this recipient and is reactivated.
    ``environment`` is ``"production"`` or ``"sandbox"`` (APNs).
    """
    return Call(
        "register_device",
        {
            "recipient": _text(recipient, "recipient"),
            "token": _text(token, "token"),
            "platform": _text(platform, "platform"),
            "environment": _text(environment, "environment"),
        },
        int,
    )


def deactivate_device(token: str, reason: str = "deactivated by the application") -> Call[bool]:
    """Stop sending to ``token``; return False if it was unknown or already inactive."""
    return Call(
        "deactivate_device",
        {
            "token": _text(token, "token"),
            "reason": _text(reason, "reason"),
        },
        bool,
    )


def set_preference(
    recipient: str, channel: str, *, opted_in: bool, category: str = "*"
) -> Call[None]:
    """Opt ``recipient`` in or out of ``channel`` for ``category`` (``"*"``: every category)."""
    return Call(
        "set_preference",
        {
            "recipient": _text(recipient, "recipient"),
            "channel": _text(channel, "channel"),
            "opted_in": _flag(opted_in, "opted_in"),
            "category": _text(category, "category"),
        },
        _nothing,
    )


class Cancellation(int):
    """What :func:`outbox.cancel` did: an ``int``, how many deliveries it took hold of
    (``cancelled + in_flight``), so callers that compare it with 0 keep working.

    ``cancelled``: pending deliveries cancelled now; they are never sent.
    ``in_flight``: deliveries a worker was sending right then. Their attempt may
    reach the provider (if it succeeds the delivery stays ``sent``), but no attempt
    is made after it: any other result ends it ``cancelled``.
    """

    cancelled: int
    in_flight: int

    def __new__(cls, cancelled: int, in_flight: int) -> Cancellation:
        self = super().__new__(cls, cancelled + in_flight)
        self.cancelled = cancelled
        self.in_flight = in_flight
        return self

    def __repr__(self) -> str:
        return f"Cancellation(cancelled={self.cancelled}, in_flight={self.in_flight})"


def _cancellation(counts: Sequence[int]) -> Cancellation:
    cancelled, in_flight = counts
    return Cancellation(cancelled, in_flight)


def cancel(message_id: str, reason: str = "cancelled by the application") -> Call[Cancellation]:
    """Cancel the deliveries of ``message_id`` not sent yet; return a :class:`Cancellation`.

    It is an ``int``: how many deliveries the cancel took hold of (0 if all were
    already sent or finished). ``.cancelled`` of them were pending and are never
    sent; ``.in_flight`` were being sent right then: that attempt may reach the
    provider (a success stays ``sent``), but it is never retried, and any other
    result ends it ``cancelled`` with ``reason``. Raises :class:`~outbox.NotFound`
    if no notification has that message id.
    """
    return Call(
        "cancel",
        {
            "message_id": _text(message_id, "message_id"),
            "reason": _text(reason, "reason"),
        },
        _cancellation,
    )


def erase_recipient(recipient: str, *, actor: str | None = None) -> Call[dict[str, int]]:
    """Erase ``recipient`` and their data (GDPR); return what was erased, as counts.

    Their unsent deliveries are cancelled (in flight ones included), their
    addresses and tokens scrubbed from every delivery and event of their
    notifications, their notifications' data emptied, and the recipient deleted
    with their devices and preferences; an ``erased`` event records it, by
    ``actor`` (e.g. ``"cli:ada"``). Message ids stay, so a retried enqueue of one
    is still a no-op. Raises :class:`~outbox.NotFound` for an unknown recipient.
    See ``outbox.erase_recipient`` in ``sql/functions/registry.sql``.
    """
    return Call(
        "erase_recipient",
        {"recipient": _text(recipient, "recipient"), "actor": _optional_text(actor, "actor")},
        dict,
    )


def create_topic(topic: str, *, description: str | None = None) -> Call[int]:
    """Create topic ``topic`` (or update its description; ``None`` keeps it); return its id.

    A topic name is 1 to 64 lowercase letters, digits, ``_``, ``.`` or ``-``.
    """
    return Call(
        "create_topic",
        {
            "topic": _text(topic, "topic"),
            "description": _optional_text(description, "description"),
        },
        int,
    )


def subscribe(recipient: str, topic: str) -> Call[bool]:
    """Subscribe ``recipient`` to ``topic``; return False if they already were.

    Raises :class:`~outbox.UnknownRecipient`, or :class:`~outbox.ValidationError`
    with ``field == "topic"`` for a topic that does not exist.
    """
    return Call(
        "subscribe",
        {"recipient": _text(recipient, "recipient"), "topic": _text(topic, "topic")},
        bool,
    )


def unsubscribe(recipient: str, topic: str) -> Call[bool]:
    """Unsubscribe ``recipient`` from ``topic``; return False if they were not subscribed.

    Notifications a broadcast already enqueued to them stay (cancel one with
    :func:`cancel`).
    """
    return Call(
        "unsubscribe",
        {"recipient": _text(recipient, "recipient"), "topic": _text(topic, "topic")},
        bool,
    )


@dataclass(frozen=True)
class BroadcastResult:
    """What one :func:`outbox.broadcast` call (or chunk) did.

    ``targets`` recipients it looked at = ``enqueued`` (notifications created now)
    + ``already`` (had one from an earlier run of the same message id)
    + ``unreachable`` (can receive none of the template's channels: skipped, a
    rerun reaches them once they can) + ``unknown`` (ids no recipient has).
    ``last_recipient`` is the last recipient id of the chunk (``None`` if it was
    empty): pass it as ``after_recipient`` to do the next chunk. For a topic it
    is an ``outbox.recipients.id`` (int), for a segment the segment's own id (str).
    """

    targets: int
    enqueued: int
    already: int
    unreachable: int
    unknown: int
    last_recipient: int | str | None


def _broadcast_result(row: Mapping[str, Any]) -> BroadcastResult:
    return BroadcastResult(**{name: row[name] for name in BroadcastResult.__dataclass_fields__})


def broadcast(
    message_id: str,
    *,
    template: str,
    topic: str | None = None,
    recipients: Sequence[str] | None = None,
    segment: str | None = None,
    data: Mapping[str, Any] | None = None,
    channels: str | Sequence[str] | None = None,
    category: str | None = None,
    priority: int = 0,
    send_at: datetime | None = None,
    expires_at: datetime | None = None,
    after_recipient: int | str | None = None,
    max_recipients: int | None = None,
) -> Call[BroadcastResult]:
    """Enqueue one notification per recipient of a segment, in one statement; return a
    :class:`BroadcastResult`.

    The segment is one of: ``topic`` (every subscriber of it), ``recipients`` (a
    list of recipient ids) or ``segment`` (an SQL query returning recipient ids as
    text, run with the privileges of the connection's role). Each recipient gets
    the notification :func:`enqueue` would give them (preferences, opt-outs and
    suppressions honoured), with the message id ``"<message_id>/<recipients.id>"``.

    Idempotent per (``message_id``, recipient): calling it again with the same
    ``message_id`` reuses the first call's content and enqueues only for the
    recipients that have no notification of it yet (new subscribers, or the rest
    of a run that stopped between chunks). ``message_id`` is at most 200
    characters. ``after_recipient`` and ``max_recipients`` make the call one chunk
    (topic or segment): the recipients after ``after_recipient`` in id order, at
    most ``max_recipients`` of them. The other arguments are :func:`enqueue`'s.
    """
    targets = [
        name
        for name, given in (("topic", topic), ("recipients", recipients), ("segment", segment))
        if given is not None
    ]
    if len(targets) != 1:
        raise _fail(
            "topic", f"give exactly one of topic, recipients or segment, got {targets or 'none'}"
        )
    params = _enqueue_params(
        message_id,
        template=template,
        data=data,
        channels=channels,
        category=category,
        priority=priority,
        send_at=send_at,
        expires_at=expires_at,
        recipient="",
    )
    del params["recipient"], params["address"]
    if max_recipients is not None:
        params["max_recipients"] = _integer(
            max_recipients, "max_recipients", range(1, _INT4_MAX + 1)
        )
    elif after_recipient is not None:
        raise _fail("after_recipient", "needs max_recipients (the size of the chunk)")
    if topic is not None:
        params["topic"] = _text(topic, "topic")
        params["after_recipient"] = (
            None
            if after_recipient is None
            else _integer(after_recipient, "after_recipient", range(0, 2**63))
        )
        params.setdefault("max_recipients", None)
        return Call("broadcast_topic", params, _broadcast_result)
    if segment is not None:
        params["segment"] = _text(segment, "segment")
        params["after_recipient"] = _optional_text(after_recipient, "after_recipient")
        params.setdefault("max_recipients", None)
        return Call("broadcast_segment", params, _broadcast_result)
    if after_recipient is not None or max_recipients is not None:
        raise _fail("max_recipients", "chunks a topic or a segment, not a list of recipients")
    if isinstance(recipients, (str, bytes)) or not isinstance(recipients, Iterable):
        raise _fail("recipients", f"must be a list of recipient ids, got {_show(recipients)}")
    params["recipients"] = [_text(r, f"recipients[{i}]") for i, r in enumerate(recipients)]
    return Call("broadcast_list", params, _broadcast_result)


def cancel_broadcast(
    message_id: str, reason: str = "cancelled by the application"
) -> Call[Cancellation]:
    """Cancel every unsent delivery of broadcast ``message_id``; return a :class:`Cancellation`.

    As :func:`cancel` does for each of its notifications, summed; the broadcast
    is marked cancelled, so a rerun of it raises instead of enqueueing more.
    Raises :class:`~outbox.NotFound` if no broadcast has that message id.
    """
    return Call(
        "cancel_broadcast",
        {"message_id": _text(message_id, "message_id"), "reason": _text(reason, "reason")},
        _cancellation,
    )


def create_template(
    key: str,
    channel: str,
    body: str,
    *,
    subject: str | None = None,
    html_body: str | None = None,
    title: str | None = None,
    locale: str = "default",
    activate: bool = True,
) -> Call[int]:
    """Add a version of template ``key`` for ``channel``; return its version number.

    Unchanged content creates nothing and returns the newest version. With
    ``activate`` (the default) the new version becomes the one used for sends.
    A field that does not compile, or is over 256 KiB, is a ValidationError
    naming the field (and the line), before anything is sent to the database.
    """
    params = {
        "key": _text(key, "key"),
        "channel": _text(channel, "channel"),
        "body": _text(body, "body"),
        "subject": _optional_text(subject, "subject"),
        "html_body": _optional_text(html_body, "html_body"),
        "title": _optional_text(title, "title"),
        "locale": _text(locale, "locale"),
        "activate": _flag(activate, "activate"),
    }
    _compiles(params)
    return Call("create_template", params, int)


def _compiles(params: Mapping[str, Any]) -> None:
    """Refuse a template that the worker could not render (the SQL function cannot tell)."""
    fields = {name: params[name] for name in ("subject", "body", "html_body", "title")}
    try:
        check_template(
            TemplateVersion(
                id=0,
                key=params["key"],
                channel=params["channel"],
                locale=params["locale"],
                version=0,
                content_hash="",
                **fields,
            )
        )
    except TemplateError as exc:
        where = f" (line {exc.line})" if exc.line else ""
        raise _fail(exc.field or "body", f"{exc.reason}{where}") from None


def activate_template(
    key: str,
    channel: str,
    version: int,
    *,
    locale: str = "default",
    actor: str | None = None,
) -> Call[None]:
    """Make ``version`` the active version of a template (a rollback); recorded as an event."""
    return Call(
        "activate_template",
        {
            "key": _text(key, "key"),
            "channel": _text(channel, "channel"),
            "version": _integer(version, "version", range(1, _INT4_MAX + 1)),
            "locale": _text(locale, "locale"),
            "actor": _optional_text(actor, "actor"),
        },
        _nothing,
    )


def _nothing(_: Any) -> None:
    return None


#: Every call, in the order of ``__all__``: the API modules build their functions from these.
CALLS: tuple[Callable[..., Call[Any]], ...] = (
    activate_template,
    broadcast,
    cancel,
    cancel_broadcast,
    create_template,
    create_topic,
    deactivate_device,
    enqueue,
    enqueue_many,
    erase_recipient,
    register_device,
    set_preference,
    subscribe,
    unsubscribe,
    upsert_recipient,
)
