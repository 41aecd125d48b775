"""The public surface, pinned: a name added to or dropped from ``outbox`` or ``outbox.aio``
is a decision, so it has to change this test too."""

from __future__ import annotations

import inspect

import outbox
import outbox.aio

FUNCTIONS = [
    "activate_template",
    "broadcast",
    "cancel",
    "cancel_broadcast",
    "create_template",
    "create_topic",
    "deactivate_device",
    "enqueue",
    "enqueue_many",
    "enqueue_stream",
    "erase_recipient",
    "register_device",
    "set_preference",
    "subscribe",
    "unsubscribe",
    "upsert_recipient",
]
ERRORS = [
    "NotFound",
    "OutboxError",
    "UnknownChannel",
    "UnknownRecipient",
    "UnknownTemplate",
    "UnsupportedConnection",
    "ValidationError",
]


def test_outbox_all_is_pinned():
    assert outbox.__all__ == sorted(ERRORS + FUNCTIONS + ["aio"])


def test_outbox_aio_all_is_pinned():
    assert outbox.aio.__all__ == FUNCTIONS


def test_every_exported_name_exists_and_is_documented():
    for module in (outbox, outbox.aio):
        for name in module.__all__:
            value = getattr(module, name)
            assert inspect.getdoc(value), f"{module.__name__}.{name} has no docstring"


def test_functions_take_the_connection_first_and_say_what_they_return():
    for name in FUNCTIONS:
        params = list(inspect.signature(getattr(outbox, name)).parameters.values())
        assert params[0].name == "conn" and params[0].kind is params[0].POSITIONAL_ONLY, name
    assert "return the notification id" in (outbox.enqueue.__doc__ or "")
    assert inspect.signature(outbox.enqueue).return_annotation == "int"


def test_error_tree():
    assert issubclass(outbox.UnsupportedConnection, TypeError)
    for name in ("UnknownChannel", "UnknownRecipient", "UnknownTemplate"):
        assert issubclass(getattr(outbox, name), outbox.ValidationError)
    for name in ERRORS:
        assert issubclass(getattr(outbox, name), outbox.OutboxError)
