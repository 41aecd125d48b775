"""`outbox api` over real HTTP (hypercorn, httpx) against a real PostgreSQL, as its own role.

The server runs in a thread of the test process, logged in as a fresh member of
``outbox_api`` (the least-privilege role of sql/api_roles.sql), so every test
here also shows that role is enough, and that it is what the API uses.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
import structlog
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typer.testing import CliRunner

from outbox import dlq
from outbox.apiserver import ApiServer, ApiThread, create_app, keys
from outbox.cli import _register, app
from outbox.providers.base import Outcome
from outbox.providers.testing import RecordingProvider, read_records
from tests import factories
from tests.integration.worker_helpers import ScriptedProvider, make_worker

BODY_LIMIT = 32 * 1024

runner = CliRunner()


def _cli(db_url: str, *args: str):
    if not any(c.name == "status" for c in app.registered_commands):
        _register()
    return runner.invoke(app, list(args), env={"OUTBOX_DATABASE_URL": db_url, "COLUMNS": "200"})


@pytest.fixture
def world(conn):
    """user-7 (seven@example.com, +14155550107) with an APNs and an FCM device; templates."""
    return factories.seven(conn)


@pytest.fixture
def api_login(db_url):
    """URL of a fresh LOGIN role in outbox_api on this test's database."""
    name = f"outbox_t_api_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}' IN ROLE outbox_api")
    yield make_conninfo(**(conninfo_to_dict(db_url) | {"user": name, "password": password}))
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [name]
        )
        admin.execute(f'DROP ROLE IF EXISTS "{name}"')


@pytest.fixture
def api(api_login):
    """The API served over HTTP on a free port, as the outbox_api login."""
    app_ = create_app(api_login, pool_size=2, max_body_bytes=BODY_LIMIT, health_cache_s=0)
    with ApiThread(ApiServer(), app_) as thread:
        yield thread


def _key(conn, *scopes: str, name: str | None = None, **limits: Any) -> str:
    made = keys.create(conn, name or f"k-{uuid.uuid4().hex[:8]}", scopes, **limits)
    conn.commit()
    return made.key


def _client(api, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=api.url, headers=headers, timeout=10)


def _snapshot(conn) -> dict[str, Any]:
    """Every row of what a request could change, as text: equal snapshots = nothing changed."""
    conn.rollback()
    found = {}
    for table in (
        "recipients",
        "devices",
        "preferences",
        "notifications",
        "deliveries",
        "events",
        "suppressions",
        "topics",
        "subscriptions",
        "broadcasts",
    ):
        found[table] = conn.execute(
            f"SELECT coalesce(array_agg(t::text ORDER BY t::text), '{{}}') FROM outbox.{table} t"
        ).fetchone()[0]
    # A request with a live key marks it used (last_used_at), whatever came of it.
    found["api_keys"] = conn.execute(
        "SELECT array_agg((id, name, scopes, revoked_at)::text ORDER BY id) FROM outbox.api_keys"
    ).fetchone()[0]
    conn.rollback()
    return found


ENQUEUE = {
    "message_id": "order-42",
    "recipient": "user-7",
    "template": "order_confirmed",
    "data": {"order": 42},
}

# Every endpoint with a body that would be valid, and the scope it needs.
ENDPOINTS = [
    ("put", "/v1/recipients/user-8", {"email": "eight@example.com"}, "recipients"),
    ("get", "/v1/recipients/user-7", None, "read"),
    ("delete", "/v1/recipients/user-7", None, "recipients"),
    (
        "put",
        "/v1/preferences",
        {"recipient": "user-7", "channel": "sms", "opted_in": False},
        "recipients",
    ),
    (
        "post",
        "/v1/devices",
        {"recipient": "user-7", "token": "fcm-token-9999", "platform": "fcm"},
        "devices",
    ),
    ("post", "/v1/devices/deactivate", {"token": "apns-token-0001"}, "devices"),
    ("post", "/v1/notifications", ENQUEUE, "enqueue"),
    ("post", "/v1/notifications/bulk", {"notifications": [ENQUEUE]}, "enqueue"),
    ("post", "/v1/notifications/order-1/cancel", None, "enqueue"),
    ("get", "/v1/notifications/order-1", None, "read"),
    ("get", "/v1/notifications/order-1/timeline", None, "read"),
    ("put", "/v1/topics/news", {"description": "News"}, "enqueue"),
    ("put", "/v1/topics/news/subscribers/user-7", None, "recipients"),
    ("delete", "/v1/topics/news/subscribers/user-7", None, "recipients"),
    (
        "post",
        "/v1/broadcasts",
        {"message_id": "b-1", "topic": "news", "template": "order_confirmed"},
        "enqueue",
    ),
    ("post", "/v1/broadcasts/b-1/cancel", None, "enqueue"),
]


def _drain(db_url: str, provider: Any) -> None:
    """A real worker sends everything due through ``provider``, then stops."""

    async def drain() -> None:
        worker = make_worker(db_url, provider)
        try:
            while await worker.run_once():
                pass
        finally:
            await worker.close()

    asyncio.run(drain())


def _call(client: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    if body is None:
        return client.request(method.upper(), path)
    return client.request(method.upper(), path, json=body)


# -- keys and scopes -----------------------------------------------------------------------------


def test_a_devices_key_registers_a_device_and_nothing_else(world, api):
    factories.enqueue_committed(world, "order-1")
    mobile = _key(world, "devices", name="mobile-app")
    before = _snapshot(world)
    with _client(api, mobile) as client:
        for method, path, body, scope in ENDPOINTS:
            if scope == "devices":
                continue
            response = _call(client, method, path, body)
            assert response.status_code == 403, (path, response.text)
            assert response.json()["error"] == "forbidden"
            assert scope in response.json()["detail"]
        assert _snapshot(world) == before  # refused, and nothing changed

        registered = client.post(
            "/v1/devices",
            json={"recipient": "user-7", "token": "fcm-token-9999", "platform": "fcm"},
        )
        assert registered.status_code == 200, registered.text
        device_id = registered.json()["device_id"]
        gone = client.post("/v1/devices/deactivate", json={"token": "apns-token-0001"})
        assert gone.json() == {"deactivated": True}
    rows = world.execute("SELECT id, token, active FROM outbox.devices ORDER BY token").fetchall()
    assert rows[0][1:] == ("apns-token-0001", False)
    assert (device_id, "fcm-token-9999", True) in rows


def test_requests_without_a_valid_key_are_refused_and_change_nothing(world, api, db_url):
    factories.enqueue_committed(world, "order-1")
    created = _cli(db_url, "api-keys", "create", "soon-revoked", "--scope", "admin")
    assert created.exit_code == 0, created.output
    revoked = created.stdout.strip()
    assert keys.looks_like_key(revoked)
    assert _cli(db_url, "api-keys", "revoke", "soon-revoked").exit_code == 0
    before = _snapshot(world)
    presented = {
        "no header": None,
        "malformed": "obx_short",
        "unknown": keys.new_key(),
        "revoked": revoked,
    }
    for why, key in presented.items():
        with _client(api, key) as client:
            for method, path, body, _ in ENDPOINTS:
                response = _call(client, method, path, body)
                assert response.status_code == 401, (why, path, response.text)
                assert response.json()["error"] == "unauthorized"
                assert response.headers["www-authenticate"] == "Bearer"
    with httpx.Client(base_url=api.url) as client:
        basic = client.get("/v1/recipients/user-7", headers={"Authorization": "Basic eDp5"})
        assert basic.status_code == 401
    assert _snapshot(world) == before


def test_api_keys_are_shown_once_and_listed_without_the_key(world, db_url):
    created = _cli(db_url, "api-keys", "create", "billing", "-s", "enqueue", "-s", "read")
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert keys.looks_like_key(key) and "shown only now" in created.output
    stored = world.execute("SELECT key_hash, prefix, scopes FROM outbox.api_keys").fetchone()
    assert stored == (keys.key_hash(key), key[:12], ["enqueue", "read"])
    for args in (("api-keys", "list"), ("api-keys", "list", "--json")):
        listed = _cli(db_url, *args)
        assert listed.exit_code == 0, listed.output
        assert "billing" in listed.output and key not in listed.output
        assert key[:12] in listed.output  # enough to recognise it, not to use it
    again = _cli(db_url, "api-keys", "create", "billing", "-s", "read")
    assert again.exit_code == 2 and "already named 'billing'" in again.output
    unknown = _cli(db_url, "api-keys", "create", "x", "-s", "everything")
    assert unknown.exit_code == 2 and "unknown scope 'everything'" in unknown.output
    assert world.execute("SELECT count(*) FROM outbox.api_keys").fetchone()[0] == 1


def test_an_expired_key_is_refused_as_a_revoked_one(world, api, db_url):
    created = _cli(db_url, "api-keys", "create", "partner", "-s", "read", "--expires-in", "30d")
    assert created.exit_code == 0, created.output
    assert "expires " in created.output
    key = created.stdout.strip()
    with _client(api, key) as client:
        assert client.get("/v1/recipients/user-7").status_code == 200
        # Its time comes (moved back, as the clock would).
        world.execute(
            "UPDATE outbox.api_keys SET created_at = now() - interval '31 days', "
            "expires_at = now() - interval '1 second' WHERE name = 'partner'"
        )
        world.commit()
        refused = client.get("/v1/recipients/user-7")
    assert refused.status_code == 401
    assert refused.json()["error"] == "unauthorized"
    listed = _cli(db_url, "api-keys", "list", "--json")
    assert listed.exit_code == 0 and '"expires_at"' in listed.output
    for bad in ("0s", "soon", "4000d"):
        refused_cli = _cli(db_url, "api-keys", "create", "x", "-s", "read", "--expires-in", bad)
        assert refused_cli.exit_code == 2, refused_cli.output
        assert "expires_in" in refused_cli.output or "duration" in refused_cli.output
    assert world.execute("SELECT count(*) FROM outbox.api_keys").fetchone()[0] == 1


# -- enqueue -------------------------------------------------------------------------------------


def test_an_enqueue_through_the_api_is_delivered_by_a_worker(world, api, db_url, tmp_path):
    key = _key(world, "enqueue", "read")
    with _client(api, key) as client:
        first = client.post("/v1/notifications", json=ENQUEUE)
        assert first.status_code == 200, first.text
        again = client.post("/v1/notifications", json=ENQUEUE)
        assert again.json() == first.json()  # the same message id is the same notification

        _drain(db_url, RecordingProvider(tmp_path / "sent.jsonl"))
        sent = read_records(tmp_path / "sent.jsonl")
        assert sorted(r["destination"] for r in sent) == [
            "+14155550107",
            "apns-token-0001",
            "fcm-token-0002",
            "seven@example.com",
        ]
        assert {r["message_id"] for r in sent} == {"order-42"}

        status = client.get("/v1/notifications/order-42")
        assert status.status_code == 200, status.text
        assert status.json()["notification"]["id"] == first.json()["id"]
        assert {d["status"] for d in status.json()["deliveries"]} == {"sent"}
        timeline = client.get("/v1/notifications/order-42/timeline").json()
        kinds = [e["kind"] for e in timeline["events"]]
        assert kinds.count("created") == 4 and kinds.count("sent") == 4
        missing = client.get("/v1/notifications/never-sent")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        nowhere = client.get("/v2/anything")
        assert nowhere.status_code == 404 and nowhere.json()["error"] == "not_found"
        wrong = client.patch("/v1/notifications")
        assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"


def test_cancel_and_message_ids_with_slashes(world, api):
    key = _key(world, "enqueue", "read")
    with _client(api, key) as client:
        body = ENQUEUE | {"message_id": "orders/42/confirmed"}
        assert client.post("/v1/notifications", json=body).status_code == 200
        cancelled = client.post(
            "/v1/notifications/orders/42/confirmed/cancel", json={"reason": "order refunded"}
        )
        assert cancelled.json() == {"cancelled": 4}
        status = client.get("/v1/notifications/orders/42/confirmed").json()
        assert {d["status"] for d in status["deliveries"]} == {"cancelled"}
        assert {d["last_error"] for d in status["deliveries"]} == {"order refunded"}


def test_validation_errors_name_the_field_and_write_nothing(world, api):
    key = _key(world, "admin")
    before = _snapshot(world)
    cases = [
        # (method, path, body, field, error)
        ("post", "/v1/notifications", ENQUEUE | {"priority": "high"}, "priority", "invalid"),
        ("post", "/v1/notifications", ENQUEUE | {"priority": 1000}, "priority", "invalid"),
        ("post", "/v1/notifications", ENQUEUE | {"colour": "red"}, "colour", "invalid"),
        ("post", "/v1/notifications", {"template": "order_confirmed"}, "message_id", "invalid"),
        (
            "post",
            "/v1/notifications",
            ENQUEUE | {"send_at": "2030-01-01T09:00:00"},
            "send_at",
            "invalid",
        ),
        (
            "post",
            "/v1/notifications",
            ENQUEUE | {"template": "nope"},
            "template",
            "unknown_template",
        ),
        (
            "post",
            "/v1/notifications",
            ENQUEUE | {"recipient": "user-404"},
            "recipient",
            "unknown_recipient",
        ),
        (
            "post",
            "/v1/notifications",
            ENQUEUE | {"channels": ["fax"]},
            "channels",
            "unknown_channel",
        ),
        ("post", "/v1/notifications", ENQUEUE | {"data": {"x": "a" * 70000}}, "data", None),
        ("put", "/v1/recipients/user-7", {"phone": "555-0107"}, "phone", "invalid"),
        ("put", "/v1/recipients/user-7", {"timezone": "Mars/Olympus"}, "timezone", "invalid"),
        (
            "put",
            "/v1/recipients/user-7",
            {"quiet_hours": {"start": "22:00+01:00", "end": "07:00"}},
            "quiet_hours",
            "invalid",
        ),
        (
            "post",
            "/v1/devices",
            {"recipient": "user-7", "token": "t" * 20, "platform": "wp"},
            "platform",
            "invalid",
        ),
        (
            "put",
            "/v1/preferences",
            {"recipient": "user-7", "channel": "sms", "opted_in": 0},
            "opted_in",
            "invalid",
        ),
    ]
    with _client(api, key) as client:
        for method, path, body, field, error in cases:
            response = _call(client, method, path, body)
            assert response.status_code in (413, 422), (body, response.text)
            if response.status_code == 413:  # the data case is over this test server's limit
                assert field == "data"
                continue
            answer = response.json()
            assert answer["field"] == field, (body, answer)
            if error is not None:
                assert answer["error"] == error, answer
        # JSON that jsonb cannot hold (NaN), and JSON that is not JSON at all.
        nan = client.post(
            "/v1/notifications",
            content=b'{"message_id": "m", "template": "order_confirmed", "recipient": "user-7",'
            b' "data": {"x": NaN}}',
            headers={"Content-Type": "application/json"},
        )
        assert nan.status_code == 422 and nan.json()["field"] == "data", nan.text
        broken = client.post(
            "/v1/notifications", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert broken.status_code == 422 and broken.json()["field"] == "body", broken.text
        bulk = client.post(
            "/v1/notifications/bulk",
            json={"notifications": [ENQUEUE, ENQUEUE | {"message_id": "b", "priority": "x"}]},
        )
        assert bulk.status_code == 422
        assert bulk.json()["field"] == "priority"
        assert bulk.json()["location"] == "notifications[1].priority"
    assert _snapshot(world) == before


def test_bulk_enqueue_is_idempotent_and_all_or_nothing(world, api):
    key = _key(world, "enqueue")
    items = [ENQUEUE | {"message_id": f"bulk-{i}", "data": {"order": i}} for i in range(5)]
    with _client(api, key) as client:
        first = client.post("/v1/notifications/bulk", json={"notifications": items})
        assert first.status_code == 200, first.text
        ids = first.json()["ids"]
        assert len(set(ids)) == 5
        again = client.post("/v1/notifications/bulk", json={"notifications": items})
        assert again.json()["ids"] == ids
        more = items[:2] + [ENQUEUE | {"message_id": "bulk-new"}]
        mixed = client.post("/v1/notifications/bulk", json={"notifications": more})
        assert mixed.json()["ids"][:2] == ids[:2]
        before = _snapshot(world)
        bad = items + [ENQUEUE | {"message_id": "bulk-bad", "recipient": "user-404"}]
        refused = client.post("/v1/notifications/bulk", json={"notifications": bad})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"] == "unknown_recipient"
        assert refused.json()["field"] == "recipient"
        assert _snapshot(world) == before
    assert world.execute("SELECT count(*) FROM outbox.notifications").fetchone()[0] == 6


# -- recipients and erasure ----------------------------------------------------------------------


def test_recipients_and_preferences_round_trip(world, api):
    key = _key(world, "recipients", "read")
    with _client(api, key) as client:
        put = client.put(
            "/v1/recipients/user-8",
            json={
                "email": "eight@example.com",
                "locale": "fr_ca",
                "timezone": "Europe/Paris",
                "quiet_hours": {"start": "22:00", "end": "07:00"},
            },
        )
        assert put.status_code == 200, put.text
        assert put.json()["locale"] == "fr-CA"
        assert put.json()["quiet_hours"] == {"start": "22:00:00", "end": "07:00:00"}
        pref = client.put(
            "/v1/preferences", json={"recipient": "user-8", "channel": "email", "opted_in": False}
        )
        assert pref.status_code == 200, pref.text
        got = client.get("/v1/recipients/user-8").json()
        assert got["email"] == "eight@example.com" and got["devices"] == []
        assert [(p["channel"], p["category"], p["opted_in"]) for p in got["preferences"]] == [
            ("email", "*", False)
        ]
        cleared = client.put("/v1/recipients/user-8", json={"email": ""}).json()
        assert cleared["email"] is None and cleared["timezone"] == "Europe/Paris"
        assert client.get("/v1/recipients/nobody").status_code == 404


def test_erasure_removes_the_person_and_keeps_the_trail(world, api, db_url):
    email, phone = "seven@example.com", "+14155550107"
    tokens = ["apns-token-0001", "fcm-token-0002"]
    world.execute(
        "SELECT outbox.set_preference(recipient => 'user-7', channel => 'push', "
        "opted_in => true, category => 'orders')"
    )
    world.commit()
    factories.enqueue_committed(world, "order-1")
    # The SMS provider fails naming the number, as some do: its reason lands in
    # last_error, its response in the event's detail.
    refusal = Outcome.permanent(
        f"twilio: 21211 invalid To {phone}", message=f"The 'To' number {phone} is not valid."
    )
    _drain(db_url, ScriptedProvider(script={phone: [refusal]}))
    later = datetime.now(UTC) + timedelta(days=30)
    factories.enqueue_committed(world, "order-2", send_at=later)  # still pending
    assert (
        world.execute(
            "SELECT count(*) FROM outbox.events WHERE detail::text LIKE %s", [f"%{phone}%"]
        ).fetchone()[0]
        >= 1
    )

    key = _key(world, "recipients", "enqueue", "read")
    with _client(api, key) as client:
        erased = client.delete("/v1/recipients/user-7")
        assert erased.status_code == 200, erased.text
        assert erased.json() == {
            "notifications": 2,
            "deliveries": 8,
            "cancelled": 4,
            "devices": 2,
            "preferences": 1,
            "events_scrubbed": erased.json()["events_scrubbed"],
        }
        assert erased.json()["events_scrubbed"] >= 1
        assert client.get("/v1/recipients/user-7").status_code == 404
        assert client.delete("/v1/recipients/user-7").status_code == 404
        # The message id is still the idempotency key; the person is no longer a recipient.
        assert client.post("/v1/notifications", json=ENQUEUE | {"message_id": "order-1"}).json()[
            "id"
        ]
        gone = client.post("/v1/notifications", json=ENQUEUE | {"message_id": "order-3"})
        assert gone.status_code == 422 and gone.json()["error"] == "unknown_recipient"
        timeline = client.get("/v1/notifications/order-2/timeline").json()["events"]
        assert [e["kind"] for e in timeline][-1] == "erased"
        assert {e["worker"] for e in timeline if e["kind"] == "erased"} == {"api:" + _name(world)}

    world.rollback()
    for table in ("recipients", "devices", "preferences", "notifications", "deliveries", "events"):
        for secret in (email, phone, "user-7", *tokens):
            if table == "notifications" and secret == "user-7":
                continue  # no column holds the user id but the recipients table's
            hits = world.execute(
                f"SELECT count(*) FROM outbox.{table} t WHERE t::text LIKE %s", [f"%{secret}%"]
            ).fetchone()[0]
            assert hits == 0, (table, secret)
    statuses = dict(
        world.execute("""SELECT n.message_id || ':' || d.channel, d.status::text
                         FROM outbox.deliveries d JOIN outbox.notifications n
                         ON n.id = d.notification_id""").fetchall()
    )
    assert statuses["order-1:email"] == "sent" and statuses["order-1:sms"] == "dead"
    assert {v for k, v in statuses.items() if k.startswith("order-2")} == {"cancelled"}
    assert (
        world.execute("SELECT count(*) FROM outbox.events WHERE kind = 'erased'").fetchone()[0] == 3
    )  # one per notification, one for the recipient
    assert world.execute("SELECT data FROM outbox.notifications").fetchall() == [({},), ({},)]
    # Their dead SMS has no one to go to any more: the DLQ passes over it.
    assert dlq.requeue(world, actor="test", everything=True) == 0


def test_erasure_stops_a_delivery_in_flight(world, api, db_url):
    factories.enqueue_committed(world, "order-1", channels=["sms"])
    provider = ScriptedProvider()
    provider.gate = asyncio.Event()
    key = _key(world, "recipients")

    async def scenario() -> httpx.Response:
        worker = make_worker(db_url, provider)
        try:
            sending = asyncio.create_task(worker.run_once())
            while not provider.calls:  # the worker holds the lease and is at the provider
                await asyncio.sleep(0.01)
            with _client(api, key) as client:
                erased = await asyncio.to_thread(client.delete, "/v1/recipients/user-7")
            provider.gate.set()  # the provider accepts; the worker's record is fenced out
            await sending
            return erased
        finally:
            await worker.close()

    erased = asyncio.run(scenario())
    assert erased.status_code == 200 and erased.json()["cancelled"] == 1, erased.text
    row = world.execute(
        "SELECT status::text, in_doubt, destination, lease_owner FROM outbox.deliveries"
    ).fetchone()
    assert row[0] == "cancelled" and row[1] == 1 and row[2].startswith("erased:")
    assert row[3] is None
    kinds = [k for (k,) in world.execute("SELECT kind FROM outbox.events ORDER BY id").fetchall()]
    assert "sent" not in kinds and kinds[-2:] == ["erased", "erased"]


def _name(conn) -> str:
    return conn.execute("SELECT name FROM outbox.api_keys ORDER BY id DESC LIMIT 1").fetchone()[0]


# -- the document, the limits --------------------------------------------------------------------


def test_openapi_document_describes_paths_security_and_schemas(api):
    with httpx.Client(base_url=api.url) as client:
        doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/v1/recipients/{recipient}",
        "/v1/preferences",
        "/v1/devices",
        "/v1/devices/deactivate",
        "/v1/notifications",
        "/v1/notifications/bulk",
        "/v1/notifications/{message_id}/cancel",
        "/v1/notifications/{message_id}/timeline",
        "/v1/notifications/{message_id}",
        "/v1/topics/{topic}",
        "/v1/topics/{topic}/subscribers/{recipient}",
        "/v1/broadcasts",
        "/v1/broadcasts/{message_id}/cancel",
        "/healthz",
    }
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "obx_…",
        "description": doc["components"]["securitySchemes"]["apiKey"]["description"],
    }
    error_ref = {"$ref": "#/components/schemas/Error"}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if path == "/healthz":
                assert "security" not in operation
                continue
            assert operation["security"] == [{"apiKey": []}], (path, method)
            for status in ("401", "403", "413", "422", "429"):
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == error_ref, (path, method, status)
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # our Error replaces FastAPI's own
    enqueue = schemas["EnqueueIn"]
    assert set(enqueue["required"]) == {"message_id", "template"}
    assert enqueue["additionalProperties"] is False
    assert enqueue["properties"]["priority"]["maximum"] == 100
    assert set(schemas["Error"]["properties"]) == {"error", "detail", "field", "location"}
    assert schemas["BulkIn"]["properties"]["notifications"]["maxItems"] == 1000


def test_bodies_over_the_limit_are_refused_before_anything(world, api):
    key = _key(world, "enqueue")
    before = _snapshot(world)
    big = ENQUEUE | {"data": {"pad": "x" * BODY_LIMIT}}
    with _client(api, key) as client:
        declared = client.post("/v1/notifications", json=big)
        assert declared.status_code == 413 and declared.json()["error"] == "too_large"

    def chunks():  # no Content-Length: the limit holds on what actually arrives
        text = json.dumps(big).encode()
        for i in range(0, len(text), 4096):
            yield text[i : i + 4096]

    with _client(api, key) as client:
        streamed = client.post(
            "/v1/notifications", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413, streamed.text
    assert _snapshot(world) == before
    with _client(api, key) as client:
        assert client.post("/v1/notifications", json=ENQUEUE).status_code == 200


def test_each_key_has_its_own_rate_limit(world, api):
    slow = _key(world, "read", rate_per_second=0.001, burst=2)
    other = _key(world, "read")
    with _client(api, slow) as client:
        answers = [client.get("/v1/recipients/user-7") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["error"] == "rate_limited"
    assert 900 <= int(answers[2].headers["retry-after"]) <= 1000
    with _client(api, other) as client:
        assert client.get("/v1/recipients/user-7").status_code == 200
    # Every key's default limit is a row a DBA edits; the slow key has its own.
    limits = world.execute(
        "SELECT name, rate_per_second, burst FROM outbox.rate_limits WHERE scope = 'api_key' "
        "ORDER BY name"
    ).fetchall()
    assert limits[0] == ("*", 20, 100) and limits[1][1:] == (0.001, 2)


def test_the_api_role_changes_nothing_but_through_the_functions(world, api_login):
    with psycopg.connect(api_login) as api_conn:
        for statement in (
            "SELECT key_hash FROM outbox.api_keys",
            "UPDATE outbox.deliveries SET status = 'sent'",
            "INSERT INTO outbox.notifications (message_id, template_key, channels) "
            "VALUES ('forged', 'x', '{email}')",
            "DELETE FROM outbox.events",
            "DELETE FROM outbox.recipients",
            "UPDATE outbox.rate_buckets SET tokens = 1e9",
            "SELECT outbox.create_template(key => 'k', channel => 'sms', body => 'b')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                api_conn.execute(statement)
            api_conn.rollback()
        assert api_conn.execute("SELECT count(*) FROM outbox.recipients").fetchone()[0] == 1
    # erase_recipient is a producer function like the others (sql/api_roles.sql).
    definer, config, public, producer, api_role = world.execute("""
        SELECT p.prosecdef, p.proconfig, has_function_privilege('public', p.oid, 'EXECUTE'),
               has_function_privilege('outbox_producer', p.oid, 'EXECUTE'),
               has_function_privilege('outbox_api', p.oid, 'EXECUTE')
        FROM pg_proc p WHERE p.oid = 'outbox.erase_recipient(text, text)'::regprocedure
    """).fetchone()
    assert definer and sorted(config) == ["outbox.retention=on", "search_path=pg_catalog, pg_temp"]
    assert not public and producer and api_role
    # Nobody but the owner reads key hashes; the reader sees the rest.
    for role, column, allowed in (
        ("outbox_reader", "name", True),
        ("outbox_reader", "key_hash", False),
        ("outbox_worker", "name", False),
        ("outbox_api", "key_hash", False),
    ):
        query = "SELECT has_column_privilege(%s, 'outbox.api_keys', %s, 'SELECT')"
        assert world.execute(query, [role, column]).fetchone()[0] is allowed, (role, column)


# -- logs ----------------------------------------------------------------------------------------


def test_the_key_never_appears_in_logs(world, db_url, api_login, tmp_path):
    """`outbox api` as a process, at DEBUG, JSON logs: its whole output holds no key."""
    good = _key(world, "read", name="logged")
    revoked = _key(world, "admin", name="revoked")
    keys.revoke(world, "revoked")
    world.commit()
    unknown = keys.new_key()
    env = {
        **os.environ,
        "OUTBOX_DATABASE_URL": api_login,
        "OUTBOX_LOG_LEVEL": "DEBUG",
        "OUTBOX_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "outbox", "api", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, line
        url = line.split("listening on ")[1].split()[0]
        for key in (good, revoked, unknown):
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
                c.get("/v1/recipients/user-7")
                c.post("/v1/notifications", json=ENQUEUE)  # 403 for the good one
                c.get("/v1/recipients/user-7", params={"key": key})  # even in the URL
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    logs = line + out + err
    requests = [json.loads(r) for r in logs.splitlines() if '"api.request"' in r]
    assert len(requests) == 9
    assert {(r["status"], r.get("key_name")) for r in requests} == {
        (200, "logged"),
        (403, "logged"),
        (401, None),
    }
    assert all(r["route"] == "/v1/recipients/{recipient}" for r in requests if r["method"] == "GET")
    for key in (good, revoked, unknown):
        assert key not in logs
        assert key[4:20] not in logs  # not even a piece of it
    assert "user-7" not in logs  # the route's template is logged, not the path


def test_in_process_log_lines_name_the_key_not_its_text(world, api):
    key = _key(world, "read", name="reader")
    with structlog.testing.capture_logs() as logs, _client(api, key) as client:
        client.get("/v1/recipients/user-7")
        client.get("/v1/notifications/nothing")
    requests = [e for e in logs if e["event"] == "api.request"]
    assert [(e["status"], e["key_name"]) for e in requests] == [(200, "reader"), (404, "reader")]
    assert key not in repr(logs)


def test_healthz_needs_no_key(api):
    with httpx.Client(base_url=api.url) as client:
        health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"


# -- topics and broadcasts -----------------------------------------------------------------------


def test_topics_subscribers_and_a_broadcast_delivered_by_a_worker(world, api, db_url):
    factories.recipient(world, "user-8", email="eight@example.com", phone=None)
    world.commit()
    key = _key(world, "enqueue", "recipients")
    with _client(api, key) as client:
        made = client.put("/v1/topics/news", json={"description": "News"})
        assert made.status_code == 200, made.text
        assert made.json()["topic"] == "news"
        for who in ("user-7", "user-8"):
            joined = client.put(f"/v1/topics/news/subscribers/{who}")
            assert joined.json() == {"subscribed": True}, joined.text
        assert client.put("/v1/topics/news/subscribers/user-8").json() == {"subscribed": False}
        body = {
            "message_id": "news-1",
            "topic": "news",
            "template": "order_confirmed",
            "data": {"order": 1},
            "channels": ["email"],
        }
        sent = client.post("/v1/broadcasts", json=body)
        assert sent.status_code == 200, sent.text
        assert sent.json() | {"last_recipient": None} == {
            "message_id": "news-1",
            "targets": 2,
            "enqueued": 2,
            "already": 0,
            "unreachable": 0,
            "unknown": 0,
            "last_recipient": None,
        }
        again = client.post("/v1/broadcasts", json=body).json()
        assert (again["enqueued"], again["already"]) == (0, 2)
        listed = client.post(
            "/v1/broadcasts",
            json={
                "message_id": "list-1",
                "recipients": ["user-8", "ghost"],
                "template": "order_confirmed",
                "channels": ["email"],
            },
        ).json()
        assert (listed["enqueued"], listed["unknown"]) == (1, 1)
        assert client.delete("/v1/topics/news/subscribers/user-8").json() == {"unsubscribed": True}
        # A segment is SQL: not offered over HTTP (the model refuses the field).
        refused = client.post("/v1/broadcasts", json=body | {"segment": "SELECT 1"})
        assert refused.status_code == 422 and refused.json()["field"] == "segment"
        unknown = client.put("/v1/topics/nope/subscribers/user-7")
        assert unknown.status_code == 422 and unknown.json()["field"] == "topic"
        ghost = client.put("/v1/topics/news/subscribers/ghost")
        assert ghost.status_code == 422 and ghost.json()["error"] == "unknown_recipient"
        cancelled = client.post("/v1/broadcasts/list-1/cancel").json()
        assert cancelled == {"cancelled": 1}
        missing = client.post("/v1/broadcasts/never/cancel")
        assert missing.status_code == 404
    provider = ScriptedProvider()
    _drain(db_url, provider)
    assert sorted(m.destination for m in provider.calls) == [
        "eight@example.com",
        "seven@example.com",
    ]
    world.rollback()
    statuses = world.execute(
        "SELECT n.message_id, d.status::text FROM outbox.notifications n"
        " JOIN outbox.deliveries d ON d.notification_id = n.id ORDER BY 1"
    ).fetchall()
    assert [status for _, status in statuses] == ["cancelled", "sent", "sent"]
