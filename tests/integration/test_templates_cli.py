"""`outbox templates`: push a folder (only what changed), list, show, diff, render, roll back.

Also: the content hash computed by the SQL function equals the Python one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

import outbox
from outbox.cli.templates import app
from outbox.templates import content_hash
from tests import factories
from tests.integration.worker_helpers import ScriptedProvider, make_worker


@pytest.fixture
def cli(db_url):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), env={"OUTBOX_DATABASE_URL": db_url})

    return invoke


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


FOLDER = {
    "welcome/email/subject.txt": "Welcome, {{ name }}\n",
    "welcome/email/body.txt": "Hi {{ name }},\nthanks for joining.\n",
    "welcome/email/body.html": "<p>Hi {{ name }}</p>\n",
    "welcome/sms/body.txt": "Hi {{ name }}, welcome!\n",
    "welcome/sms.fr/body.txt": "Salut {{ name }} !\n",
    "welcome/push/title.txt": "Welcome\n",
    "welcome/push/body.txt": "Hi {{ name }}\n",
    "reset/sms/body.txt": "Your code is {{ code }}",
    "README.md": "These are our templates.",
}


def _versions(db_url: str) -> list[tuple]:
    with psycopg.connect(db_url) as c:
        return c.execute(
            "SELECT key, channel::text, locale, version, active FROM outbox.templates "
            "ORDER BY 1, 2, 3, 4"
        ).fetchall()


def test_push_creates_versions_and_an_unchanged_folder_is_a_no_op(cli, db_url, tmp_path):
    folder = _write(tmp_path, FOLDER)
    first = cli("push", str(folder))
    assert first.exit_code == 0, first.output
    assert "added 5 new versions; 0 unchanged" in first.output
    assert _versions(db_url) == [
        ("reset", "sms", "default", 1, True),
        ("welcome", "email", "default", 1, True),
        ("welcome", "push", "default", 1, True),
        ("welcome", "sms", "default", 1, True),
        ("welcome", "sms", "fr", 1, True),
    ]
    with psycopg.connect(db_url) as c:
        stored = c.execute(
            "SELECT subject, body, html_body, title FROM outbox.templates "
            "WHERE key = 'welcome' AND channel = 'email'"
        ).fetchone()
    # The one trailing newline editors add is not part of the template; inner ones are.
    assert stored == (
        "Welcome, {{ name }}",
        "Hi {{ name }},\nthanks for joining.",
        "<p>Hi {{ name }}</p>",
        None,
    )

    again = cli("push", str(folder))
    assert again.exit_code == 0, again.output
    assert "added 0 new versions; 5 unchanged" in again.output
    assert len(_versions(db_url)) == 5

    _write(folder, {"welcome/sms/body.txt": "Hi {{ name }}, welcome aboard!\n"})
    dry = cli("push", str(folder), "--dry-run")
    assert "would add 1 new version; 4 unchanged" in dry.output
    assert len(_versions(db_url)) == 5
    changed = cli("push", str(folder))
    assert "added 1 new version; 4 unchanged" in changed.output
    assert ("welcome", "sms", "default", 2, True) in _versions(db_url)
    assert ("welcome", "sms", "default", 1, False) in _versions(db_url)


def test_push_refuses_a_template_that_does_not_compile_and_writes_nothing(cli, db_url, tmp_path):
    folder = _write(tmp_path, {**FOLDER, "broken/sms/body.txt": "Hello {{ name }\n"})
    result = cli("push", str(folder))
    assert result.exit_code == 1
    assert f"{folder / 'broken' / 'sms'}: syntax error" in result.output
    assert "in body line 1" in result.output and "nothing was pushed" in result.output
    assert _versions(db_url) == []


def test_push_reports_every_layout_problem_at_once(cli, db_url, tmp_path):
    folder = _write(
        tmp_path,
        {
            "welcome/fax/body.txt": "x",
            "welcome/sms/subject.txt": "an sms has no subject",
            "welcome/sms/body.txt": "ok",
            "welcome/email/body.txt": "no subject",
            "welcome/push.fr_CA/body.txt": "bad locale",
            "Bad Key/sms/body.txt": "x",
            "notes.txt": "stray file",
        },
    )
    result = cli("push", str(folder))
    assert result.exit_code == 1
    for expected in [
        f"{folder / 'welcome' / 'fax'}: unknown channel 'fax' (expected email, sms, push)",
        f"{folder / 'welcome' / 'sms' / 'subject.txt'}: unexpected file"
        " (a sms template has body.txt)",
        f"{folder / 'welcome' / 'email'}: an email template needs a non-empty subject.txt",
        f"{folder / 'welcome' / 'push.fr_CA'}: 'fr_CA' is not a locale like fr or fr-CA",
        f"{folder / 'Bad Key'}: 'Bad Key' is not a valid template key",
        f"{folder / 'notes.txt'}: expected a folder per template key, found a file",
    ]:
        assert expected in result.output
    assert _versions(db_url) == []
    missing = cli("push", str(tmp_path / "nowhere"))
    assert missing.exit_code == 1 and "nowhere is not a directory" in missing.output


def test_rollback_via_cli_activates_the_old_version_and_sends_use_it(cli, db_url, conn, tmp_path):
    folder = _write(tmp_path, {"reset/sms/body.txt": "Code: {{ code }}"})
    cli("push", str(folder))
    _write(folder, {"reset/sms/body.txt": "Your code is {{ code }}"})
    cli("push", str(folder))

    result = cli("rollback", "reset", "--to", "1")
    assert result.exit_code == 0, result.output
    assert "reset sms (default): active version is now v1 (was v2)" in result.output
    kind, worker, detail = conn.execute(
        "SELECT kind, worker, detail FROM outbox.events WHERE kind = 'template_activated'"
    ).fetchone()
    assert worker.startswith("cli") and (detail["version"], detail["previous_version"]) == (1, 2)
    # Pushing the unchanged folder does not undo the rollback: v2 is still the newest content.
    assert "added 0 new versions" in cli("push", str(folder)).output
    assert ("reset", "sms", "default", 1, True) in _versions(db_url)

    factories.recipient(conn, "user-1", phone="+14155550100")
    outbox.enqueue(conn, "m-1", recipient="user-1", template="reset", data={"code": "123456"})
    conn.commit()
    provider = ScriptedProvider()
    worker = make_worker(db_url, provider)

    async def send():
        await worker.run_once()
        await worker.close()

    asyncio.run(send())
    assert [m.body for m in provider.calls] == ["Code: 123456"]
    assert conn.execute(
        "SELECT t.version FROM outbox.deliveries d JOIN outbox.templates t ON t.id = d.template_id"
    ).fetchone() == (1,)

    assert "v1 is already active" in cli("rollback", "reset", "--to", "1").output
    unknown = cli("rollback", "reset", "--to", "9")
    assert unknown.exit_code == 1 and "no template 'reset' with version 9" in unknown.output


def test_rollback_asks_which_when_the_version_is_ambiguous(cli, db_url, tmp_path):
    cli("push", str(_write(tmp_path, FOLDER)))
    result = cli("rollback", "welcome", "--to", "1")
    assert result.exit_code == 1
    assert "has a v1 for email (default), sms (default), sms (fr), push (default)" in result.output
    assert "--channel and --locale" in result.output


def test_list_show_and_diff(cli, db_url, tmp_path):
    folder = _write(tmp_path, FOLDER)
    cli("push", str(folder))
    _write(folder, {"welcome/sms/body.txt": "Hi {{ name }}, welcome aboard!\n"})
    cli("push", str(folder))

    listed = cli("list")
    assert listed.exit_code == 0
    assert "templates (5)" in listed.output
    # Not a terminal: plain whitespace-separated columns.
    assert [
        cells[:6]
        for cells in map(str.split, listed.output.splitlines())
        if cells[:2] == ["welcome", "sms"]
    ] == [
        ["welcome", "sms", "default", "v2", "v2", "2"],
        ["welcome", "sms", "fr", "v1", "v1", "1"],
    ]

    shown = cli("show", "welcome", "--channel", "sms", "--locale", "default")
    assert shown.exit_code == 0
    assert "Hi {{ name }}, welcome aboard!" in shown.output and "v2 (active)" in shown.output
    old = cli("show", "welcome", "--channel", "sms", "--locale", "default", "--version", "1")
    assert "Hi {{ name }}, welcome!" in old.output

    diffed = cli("diff", "welcome", "--from", "1", "--to", "2")
    assert diffed.exit_code == 0
    assert "-Hi {{ name }}, welcome!" in diffed.output
    assert "+Hi {{ name }}, welcome aboard!" in diffed.output
    assert "welcome · sms · default · v1 → v2" in diffed.output
    missing = cli("diff", "welcome", "--from", "1", "--to", "3")
    assert missing.exit_code == 1
    assert "no channel and locale with both v1 and v3" in missing.output
    assert cli("show", "nope").exit_code == 1


def test_render_previews_with_locale_fallback_and_names_errors(cli, db_url, tmp_path):
    cli("push", str(_write(tmp_path, FOLDER)))
    result = cli("render", "welcome", "--data", '{"name": "Zoé"}', "--locale", "fr-CA")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Welcome, Zoé" in out and "<p>Hi Zoé</p>" in out  # email: default locale
    assert "welcome · sms · fr · v1" in out and "Salut Zoé !" in out  # fr-CA -> fr
    assert "1 segment (gsm7)" in out
    assert "payload" in out

    sms = cli("render", "welcome", "--channel", "sms", "--data", '{"name": "<b>"}')
    assert "Hi <b>, welcome!" in sms.output  # plain text is not escaped
    html = cli("render", "welcome", "--channel", "email", "--data", '{"name": "<b>"}')
    assert "<p>Hi &lt;b&gt;</p>" in html.output  # the HTML body is

    undefined = cli("render", "welcome", "--channel", "sms", "--data", "{}")
    assert undefined.exit_code == 1
    assert "template 'welcome' v1 (default)" in undefined.output and "name" in undefined.output

    data_file = tmp_path / "data.json"
    data_file.write_text('{"code": "42"}')
    assert "Your code is 42" in cli("render", "reset", "--data", f"@{data_file}").output

    bad = cli("render", "welcome", "--data", "{not json")
    assert bad.exit_code == 2 and "not valid JSON" in bad.output
    not_object = cli("render", "welcome", "--data", "[1, 2]")
    assert not_object.exit_code == 2 and "must be a JSON object, got list" in not_object.output
    locale = cli("render", "welcome", "--locale", "!!")
    assert locale.exit_code == 2 and "invalid locale '!!'" in locale.output
    channel = cli("render", "welcome", "--channel", "fax")
    assert channel.exit_code == 2 and "unknown channel 'fax'" in channel.output


def test_the_command_is_registered_on_the_outbox_cli(db_url, tmp_path):
    from outbox.cli import _register
    from outbox.cli import app as root

    _register()
    result = CliRunner().invoke(root, ["templates", "list"], env={"OUTBOX_DATABASE_URL": db_url})
    assert result.exit_code == 0, result.output
    assert "templates (0)" in result.output


HASH_CASES = [
    ("Subject", "Body", "<p>Body</p>", None),
    (None, "Body", None, "Title"),
    (None, "", None, None),
    ("", "x", None, None),  # "" and None hash differently
    (None, "x", "", None),
    ("a:b,", "1:c,", None, None),  # netstring-looking content
    ("Zoé 🎉", "日本語\r\nline", None, None),
    (None, "tail newline\n", None, None),
]


def test_sql_and_python_content_hashes_agree(conn):
    hashes = set()
    for fields in HASH_CASES:
        sql_hash = conn.execute(
            "SELECT outbox.template_content_hash(%s, %s, %s, %s)", fields
        ).fetchone()[0]
        assert sql_hash == content_hash(*fields), fields
        hashes.add(sql_hash)
    assert len(hashes) == len(HASH_CASES)


def test_create_template_stores_the_python_hash(conn):
    outbox.create_template(
        conn, "welcome", "email", "Hi {{ name }}", subject="Welcome 🎉", html_body="<p>Hi</p>"
    )
    outbox.create_template(conn, "welcome", "push", "Hi", title="Hey")
    stored = conn.execute(
        "SELECT subject, body, html_body, title, content_hash FROM outbox.templates"
    ).fetchall()
    assert all(row[4] == content_hash(*row[:4]) for row in stored)


def test_render_of_a_cpu_bomb_ends_with_the_time_limit(cli, conn):
    """T1: `outbox templates render` on a CPU-heavy template stops at the time limit
    (1 s) with a clear error, instead of hanging."""
    bomb = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"
    outbox.create_template(conn, "cpu", "sms", bomb)
    conn.commit()
    result = cli("render", "cpu", "--data", "{}")
    assert result.exit_code == 1
    assert (
        "error: template 'cpu' v1 (default): rendering took longer than the time limit "
        "of 1 s (sandbox) in body line 1" in result.output
    )
