"""Producers in any language: the SQL functions called from plain SQL, and the SQLAlchemy path."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

import outbox
from outbox.db import sqlalchemy_url


def test_enqueue_from_plain_sql(db_url):
    with psycopg.connect(db_url) as c:
        c.execute("""
            SELECT outbox.upsert_recipient(recipient => 'user-7', email => 'a@example.com');
            SELECT outbox.create_template(key => 'order_confirmed', channel => 'email',
                                          body => 'Order {{ order }}', subject => 'Order');
        """)
        nid = c.execute("""
            SELECT outbox.enqueue(message_id => 'order-42-confirmed', recipient => 'user-7',
                                  template => 'order_confirmed', data => '{"order": 42}')
        """).fetchone()[0]
        again = c.execute("""
            SELECT outbox.enqueue(message_id => 'order-42-confirmed', recipient => 'user-7',
                                  template => 'order_confirmed', data => '{"order": 42}')
        """).fetchone()[0]
        c.commit()
        assert nid == again
        rows = c.execute(
            "SELECT channel::text, destination, status::text FROM outbox.deliveries"
        ).fetchall()
        assert rows == [("email", "a@example.com", "pending")]


def test_sql_error_carries_sqlstate_and_field(db_url):
    with psycopg.connect(db_url) as c, pytest.raises(psycopg.Error) as info:
        c.execute(
            "SELECT outbox.enqueue(message_id => 'x', recipient => 'nobody', template => 't')"
        )
    # The template is checked before the recipient.
    assert info.value.sqlstate == "OB003"
    assert info.value.diag.column_name == "template"


def test_sqlalchemy_session_and_connection(db_url):
    engine = create_engine(sqlalchemy_url(db_url))
    try:
        with Session(engine) as session:
            outbox.upsert_recipient(session, "user-9", email="nine@example.com")
            outbox.create_template(session, "hello", "email", "Hello", subject="Hi")
            session.commit()
        with Session(engine) as session:
            session.execute(text("CREATE TABLE public.orders (id int)"))
            session.execute(text("INSERT INTO public.orders VALUES (1)"))
            outbox.enqueue(session, "order-1", recipient="user-9", template="hello")
            session.rollback()  # the app's rollback takes the notification with it
        with Session(engine) as session:
            session.execute(text("CREATE TABLE public.orders (id int)"))
            outbox.enqueue(session, "order-1", recipient="user-9", template="hello")
            session.commit()
        with engine.connect() as sa_conn:
            outbox.enqueue(sa_conn, "order-2", recipient="user-9", template="hello")
            sa_conn.commit()
        with engine.connect() as sa_conn:
            rows = sa_conn.execute(
                text("SELECT message_id FROM outbox.notifications ORDER BY id")
            ).fetchall()
        assert [r[0] for r in rows] == ["order-1", "order-2"]
    finally:
        engine.dispose()


# I4 and I5 from plain SQL: each refused call names its field and writes nothing.
SMS = "channel => 'sms', body => 'b', "
BAD_TEMPLATES = {
    "body over 256 KiB": (
        "channel => 'sms', body => repeat('x', 262145)",
        "body",
        "body is 262145 bytes, over the limit of 262144 (256 KiB)",
    ),
    "html_body over 256 KiB": (
        "channel => 'email', subject => 's', body => 'b', html_body => repeat('é', 131073)",
        "html_body",
        "html_body is 262146 bytes, over the limit of 262144 (256 KiB)",
    ),
    "locale with a space": (SMS + "locale => 'fr CA'", "locale", "locale 'fr CA' is not a"),
    "locale empty": (SMS + "locale => ''", "locale", "locale '' is not a language tag"),
    "locale too long": (SMS + "locale => 'french'", "locale", "is not a language tag"),
    "activate NULL": (SMS + "activate => NULL", "activate", "activate must be true or false"),
}


def _create_template(args: str) -> str:
    return f"SELECT outbox.create_template(key => 'k', {args})"


@pytest.mark.parametrize("case", BAD_TEMPLATES, ids=list(BAD_TEMPLATES))
def test_create_template_refuses_bad_input_naming_the_field(db_url, case):
    args, field, message = BAD_TEMPLATES[case]
    with psycopg.connect(db_url) as c:
        with pytest.raises(psycopg.Error) as info:
            c.execute(_create_template(args))
        assert info.value.sqlstate == "OB001"
        assert info.value.diag.column_name == field
        assert message in info.value.diag.message_primary
        c.rollback()
        assert c.execute("SELECT count(*) FROM outbox.templates").fetchone() == (0,)


def test_create_template_stores_locales_as_upsert_recipient_does(db_url):
    """fr_CA is fr-CA (what the claim's locale fallback compares), as for recipients."""
    with psycopg.connect(db_url) as c:
        for given in (
            "fr_CA",
            "FR-ca",
            "pt_br",
            "es-419",
            "zh_hant_tw",
            "SR-latn",
            "DEFAULT",
            None,
        ):
            c.execute(
                "SELECT outbox.create_template(key => 'k', channel => 'sms', body => %s, "
                "locale => %s)",
                (f"b {given}", given),
            )
            c.execute(
                "SELECT outbox.upsert_recipient(recipient => %s, locale => %s)",
                (f"r-{given}", given),
            )
        templates = c.execute("SELECT locale FROM outbox.templates ORDER BY id").fetchall()
        recipients = c.execute("SELECT locale FROM outbox.recipients ORDER BY id").fetchall()
        assert [t for (t,) in templates] == [
            "fr-CA",
            "fr-CA",
            "pt-BR",
            "es-419",
            "zh-Hant-TW",
            "sr-Latn",
            "default",
            "default",
        ]
        assert templates == recipients
        # Exactly at the size limit is fine.
        c.execute(
            "SELECT outbox.create_template(key => 'big', channel => 'sms', "
            "body => repeat('x', 262144))"
        )
