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
