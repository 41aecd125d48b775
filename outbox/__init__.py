"""Outbox: transactional notifications for applications on PostgreSQL.

Enqueue inside your own transaction::

    import outbox
    with psycopg.connect(url) as conn:          # or a SQLAlchemy Session
        place_order(conn, ...)
        outbox.enqueue(conn, "order-42-confirmed", recipient="user-7",
                       template="order_confirmed", data={"order": 42})
    # commit: the order and its notification exist together, and workers wake up

With asyncio, the same functions are coroutines in :mod:`outbox.aio`::

    await outbox.aio.enqueue(aconn, "order-42-confirmed", recipient="user-7",
                             template="order_confirmed", data={"order": 42})

Bad input raises :class:`ValidationError` (or a subclass) naming the field.
"""

from outbox import aio
from outbox.api import (
    activate_template,
    broadcast,
    cancel,
    cancel_broadcast,
    create_template,
    create_topic,
    deactivate_device,
    enqueue,
    enqueue_many,
    enqueue_stream,
    erase_recipient,
    register_device,
    set_preference,
    subscribe,
    unsubscribe,
    upsert_recipient,
)
from outbox.errors import (
    NotFound,
    OutboxError,
    UnknownChannel,
    UnknownRecipient,
    UnknownTemplate,
    UnsupportedConnection,
    ValidationError,
)

__all__ = [
    "NotFound",
    "OutboxError",
    "UnknownChannel",
    "UnknownRecipient",
    "UnknownTemplate",
    "UnsupportedConnection",
    "ValidationError",
    "activate_template",
    "aio",
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
