"""What ``outbox`` says when something is wrong: one ``error:`` line (and a hint), exit 1.

Every case of docs/operations.md "When a command fails": an unreachable or
misconfigured database, a database never migrated or at another revision, a
setting with bad syntax, a provider without credentials or with a malformed
URL, bad input. Each test also checks that no traceback and no secret (the
database password, a provider token) is printed. The worker and the webhook
receiver are run as real processes: a start-up check that failed to refuse
would leave them running, and the test would time out instead of passing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from importlib.metadata import version

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typer.testing import CliRunner

import outbox.errors
from outbox import migrate
from outbox.cli import _register, app
from outbox.settings import Settings

PASSWORD = "pw-" + uuid.uuid4().hex[:12]  # never to be printed
TOKEN = "tok-" + uuid.uuid4().hex[:16]  # a provider secret, never to be printed
UNREACHABLE = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/shop"


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OUTBOX_") or k == "OUTBOX_TEST_DATABASE_URL"
    }


@pytest.fixture
def cli(monkeypatch):
    """cli(*args, **env) -> result of `outbox args` with only these OUTBOX_* variables set."""
    _register()
    for name in list(os.environ):
        if name.startswith("OUTBOX_") and name != "OUTBOX_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(os.path.dirname(__file__))  # no stray .env is read

    def invoke(*args: str, **env: str):
        return CliRunner().invoke(app, list(args), env=env)

    return invoke


def _refused(result, *expected: str) -> str:
    """Assert a clean failure (exit 1, `error:` first, no traceback, no secret); its stderr."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # not an escaped error
    err = result.stderr
    assert err.startswith("error: "), err
    assert "Traceback" not in result.output
    assert PASSWORD not in result.output and TOKEN not in result.output
    for text in expected:
        assert text in err, (text, err)
    return err


def _with_password(url: str) -> str:
    """The same database, with a password in the URL (trust auth ignores it)."""
    return make_conninfo(url, password=PASSWORD)


def _set_revision(url: str, revision: str) -> None:
    with psycopg.connect(url) as c:
        c.execute("UPDATE outbox_alembic_version SET version_num = %s", [revision])


def _dbname(url: str) -> str:
    return str(conninfo_to_dict(url)["dbname"])


# --- the database --------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["migrate"],
        ["dlq", "list"],
        ["templates", "list"],
        ["prune", "--older-than", "7d"],
    ],
)
def test_unreachable_database_names_host_port_and_database_not_the_password(cli, command):
    result = cli(*command, OUTBOX_DATABASE_URL=UNREACHABLE)
    err = _refused(
        result,
        "error: cannot connect to PostgreSQL at 127.0.0.1:1, database shop, "
        "user postgres: Connection refused",
        "hint: is PostgreSQL running there",
    )
    # `migrate` goes through SQLAlchemy: its 100 lines of wrapping are not shown either.
    assert "sqlalche.me" not in err and len(err.splitlines()) == 2


def test_unknown_role_and_missing_database_say_what_to_check(cli, server_url):
    params = conninfo_to_dict(server_url)
    host, port = params.get("host", "127.0.0.1"), params.get("port", "5432")
    # A Unix socket (the embedded server) is named by its folder, with the port apart.
    where = f"{host} (port {port})" if host.startswith("/") else f"{host}:{port}"
    nobody = make_conninfo(server_url, user="nobody_" + uuid.uuid4().hex[:6], password=PASSWORD)
    _refused(
        cli("status", OUTBOX_DATABASE_URL=nobody),
        f"error: cannot connect to PostgreSQL at {where}",
        "does not exist",
        "hint: check the user and password in OUTBOX_DATABASE_URL",
    )
    missing = make_conninfo(server_url, dbname="nodb_" + uuid.uuid4().hex[:6], password=PASSWORD)
    _refused(
        cli("dlq", "list", OUTBOX_DATABASE_URL=missing),
        "does not exist",
        "hint: create that database",
    )


@pytest.mark.parametrize(
    "url, expected",
    [
        (
            f"notaurl-{PASSWORD}",
            "error: OUTBOX_DATABASE_URL is neither a postgresql:// URL nor a "
            "key=value conninfo string (value not shown",
        ),
        (
            f"mysql://root:{PASSWORD}@localhost/db",
            "error: OUTBOX_DATABASE_URL starts with mysql://, not a PostgreSQL URL",
        ),
        (f"postgresql+psycopg://u:{PASSWORD}@h/db", "a SQLAlchemy URL; write it as a libpq URL"),
    ],
)
def test_a_database_url_that_is_not_one_is_named_and_not_echoed(cli, url, expected):
    for command in (["status"], ["migrate"]):
        _refused(cli(*command, OUTBOX_DATABASE_URL=url), expected)


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["inspect", "x"],
        ["dlq", "list"],
        ["templates", "list"],
        ["prune", "--older-than", "7d"],
    ],
)
def test_a_database_never_migrated_says_run_outbox_migrate(cli, empty_db_url, command):
    result = cli(*command, OUTBOX_DATABASE_URL=_with_password(empty_db_url))
    err = _refused(
        result,
        f"error: the outbox schema is not installed in database "
        f"'{_dbname(empty_db_url)}': run `outbox migrate`",
    )
    assert len(err.splitlines()) == 1


def test_a_database_behind_says_which_revisions_and_to_migrate(cli, db_url):
    migrate.downgrade(db_url, "0004")
    needed = migrate.head()
    _refused(
        cli("status", OUTBOX_DATABASE_URL=db_url),
        f"error: database '{_dbname(db_url)}' is at revision 0004, this Outbox needs "
        f"{needed}: run `outbox migrate`",
    )
    result = cli("migrate", OUTBOX_DATABASE_URL=db_url)
    assert result.exit_code == 0 and f"0004 -> {needed}" in result.stdout
    assert cli("status", OUTBOX_DATABASE_URL=db_url).exit_code == 0


def test_a_database_ahead_is_refused_even_by_migrate(cli, db_url):
    _set_revision(db_url, "0099_from_the_future")
    for command in (["status"], ["dlq", "list"], ["migrate"]):
        _refused(
            cli(*command, OUTBOX_DATABASE_URL=db_url),
            f"error: database '{_dbname(db_url)}' is at revision 0099_from_the_future, "
            f"which this Outbox does not know (it needs {migrate.head()}): a newer Outbox "
            "migrated it",
        )


def test_check_returns_the_revision_and_raises_the_right_error(db_url, empty_db_url):
    assert migrate.check(db_url) == migrate.head()
    with pytest.raises(outbox.errors.SchemaNotInstalled):
        migrate.check(empty_db_url)
    _set_revision(db_url, "0003")
    with pytest.raises(outbox.errors.SchemaBehind) as behind:
        migrate.check(db_url)
    assert (behind.value.current, behind.value.needed) == ("0003", migrate.head())
    _set_revision(db_url, "9999")
    with pytest.raises(outbox.errors.SchemaAhead):
        migrate.check(db_url)


def test_check_as_the_worker_role_reads_the_revision(db_url, empty_db_url):
    """The least-privilege roles may read outbox_alembic_version (migration 0006)."""
    name, password = f"outbox_t_check_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}' IN ROLE outbox_worker")
    try:
        assert migrate.check(make_conninfo(db_url, user=name, password=password)) == migrate.head()
        with pytest.raises(outbox.errors.SchemaNotInstalled):
            migrate.check(make_conninfo(empty_db_url, user=name, password=password))
        # A role the grant does not reach (made by hand, outside the outbox roles) can
        # still tell an installed schema from a missing one, and is not refused.
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(f'REVOKE outbox_worker FROM "{name}"')
            admin.execute(f'GRANT USAGE ON SCHEMA outbox TO "{name}"')
        assert migrate.check(make_conninfo(db_url, user=name, password=password)) is None
    finally:
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [name]
            )
            admin.execute(f'REVOKE ALL ON SCHEMA outbox FROM "{name}"')
            admin.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_an_unknown_revision_to_migrate_to(cli, db_url):
    _refused(
        cli("migrate", "nosuch", "--downgrade", OUTBOX_DATABASE_URL=db_url),
        "error: ",
        "nosuch",
        f"hint: revisions run from base to {migrate.head()}",
    )


# --- the worker and the webhook receiver refuse to start --------------------------------


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # A timeout, not a kill: a worker that started its loops would fail the test here.
    return subprocess.run(
        [sys.executable, "-m", "outbox", *args],
        env=_clean_env() | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _process_refused(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr and TOKEN not in proc.stdout + proc.stderr
    assert "worker.started" not in proc.stdout + proc.stderr
    for text in expected:
        assert text in proc.stderr, (text, proc.stderr)


def test_worker_and_webhooks_refuse_a_database_never_migrated(empty_db_url):
    env = {
        "OUTBOX_DATABASE_URL": _with_password(empty_db_url),
        "OUTBOX_WEBHOOKS_PORT": "0",
        "OUTBOX_TWILIO_AUTH_TOKEN": TOKEN,
    }
    expected = f"error: the outbox schema is not installed in database '{_dbname(empty_db_url)}'"
    _process_refused(_run(["worker"], env), expected)
    _process_refused(_run(["webhooks"], env), expected)


def test_worker_and_webhooks_refuse_a_database_at_another_revision(db_url):
    _set_revision(db_url, "0001")
    env = {"OUTBOX_DATABASE_URL": db_url, "OUTBOX_WEBHOOKS_PORT": "0"}
    behind = f"is at revision 0001, this Outbox needs {migrate.head()}: run `outbox migrate`"
    _process_refused(_run(["worker"], env), behind)
    _process_refused(_run(["webhooks"], env), behind)
    _set_revision(db_url, "0042_newer")
    _process_refused(_run(["worker"], env), "which this Outbox does not know")


def test_worker_with_an_unreachable_database():
    _process_refused(
        _run(["worker"], {"OUTBOX_DATABASE_URL": UNREACHABLE}),
        "error: cannot connect to PostgreSQL at 127.0.0.1:1, database shop",
    )


# --- providers ------------------------------------------------------------------------


TWILIO = {
    "OUTBOX_PROVIDERS_SMS": "twilio",
    "OUTBOX_TWILIO_ACCOUNT_SID": "AC123",
    "OUTBOX_TWILIO_AUTH_TOKEN": TOKEN,
    "OUTBOX_TWILIO_FROM_NUMBER": "+14155550100",
}


def test_missing_provider_credentials_name_the_variable(cli, db_url):
    env = {
        "OUTBOX_DATABASE_URL": db_url,
        "OUTBOX_PROVIDERS_SMS": "twilio",
        "OUTBOX_TWILIO_AUTH_TOKEN": TOKEN,
    }
    _refused(
        cli("worker", **env),
        "error: provider 'twilio' is listed in OUTBOX_PROVIDERS_SMS but "
        "OUTBOX_TWILIO_ACCOUNT_SID is not set",
        "hint: set it in the environment or in .env",
    )


def test_an_unknown_provider_lists_the_known_ones(cli, db_url):
    _refused(
        cli("worker", OUTBOX_DATABASE_URL=db_url, OUTBOX_PROVIDERS_SMS="console,twillio"),
        "error: unknown provider 'twillio' in OUTBOX_PROVIDERS_SMS; known: apns, console",
    )


@pytest.mark.parametrize(
    "field, value, shown",
    [
        ("OUTBOX_TWILIO_BASE_URL", "not a url", "'not a url'"),
        ("OUTBOX_TWILIO_BASE_URL", "ftp://files.example.com", "'ftp://files.example.com'"),
        ("OUTBOX_TWILIO_BASE_URL", f"https://AC123:{TOKEN}@api:x", "'https://**********@api:x'"),
        (
            "OUTBOX_TWILIO_STATUS_CALLBACK_URL",
            "hooks.example.com/twilio",
            "'hooks.example.com/twilio'",
        ),
    ],
)
def test_a_malformed_provider_url_is_refused_at_start_up(cli, db_url, field, value, shown):
    _refused(
        cli("worker", OUTBOX_DATABASE_URL=db_url, **TWILIO, **{field: value}),
        f"error: provider 'twilio': {field}: {shown} is not an http(s) URL",
    )


# --- settings -------------------------------------------------------------------------


def test_a_setting_with_bad_syntax_names_the_variable_and_the_expected_form(cli):
    err = _refused(
        cli(
            "status",
            OUTBOX_WORKER_CONCURRENCY="fifty",
            OUTBOX_LOG_FORMAT="xml",
            OUTBOX_DATABASE_URL=UNREACHABLE,
        ),
        "error: OUTBOX_WORKER_CONCURRENCY='fifty': Input should be a valid integer",
        "error: OUTBOX_LOG_FORMAT='xml': String should match pattern '^(console|json)$'",
        "hint: fix it in the environment or in .env",
    )
    assert len(err.splitlines()) == 3


def test_a_provider_list_that_is_broken_json_says_both_spellings(cli):
    _refused(
        cli("status", OUTBOX_PROVIDERS_SMS='["twilio"', OUTBOX_DATABASE_URL=UNREACHABLE),
        "error: OUTBOX_PROVIDERS_SMS='[\"twilio\"': not a JSON list",
        'like twilio,vonage, or a JSON list, like ["twilio", "vonage"]',
    )


@pytest.mark.parametrize(
    "value, expected",
    [
        ("twilio", ["twilio"]),
        ("twilio,vonage", ["twilio", "vonage"]),
        (" twilio , vonage ,", ["twilio", "vonage"]),
        ('["twilio", "vonage"]', ["twilio", "vonage"]),
        ('["console"]', ["console"]),
    ],
)
def test_list_settings_take_a_comma_list_or_json(monkeypatch, value, expected):
    monkeypatch.setenv("OUTBOX_PROVIDERS_SMS", value)
    monkeypatch.setenv("OUTBOX_WORKER_CHANNELS", value)
    settings = Settings(_env_file=None)
    assert settings.providers_sms == expected and settings.worker_channels == expected
    assert Settings(_env_file=None, providers_sms=["a", "b"]).providers_sms == ["a", "b"]


# --- bad input, --debug, --version, the dlq --------------------------------------------


def test_an_outbox_validation_error_is_one_line(cli, db_url):
    _refused(
        cli("prune", "--older-than", "0s", OUTBOX_DATABASE_URL=db_url),
        "error: older_than must be positive, got 0:00:00",
    )


def test_debug_shows_the_traceback_still_without_secrets(cli):
    for result in (
        cli("--debug", "status", OUTBOX_DATABASE_URL=UNREACHABLE),
        cli("status", OUTBOX_DATABASE_URL=UNREACHABLE, OUTBOX_DEBUG="1"),
    ):
        assert result.exit_code == 1
        assert "Traceback (most recent call last)" in result.stderr
        assert "psycopg.OperationalError" in result.stderr
        assert "error: cannot connect to PostgreSQL at 127.0.0.1:1" in result.stderr
        assert PASSWORD not in result.output
    assert (
        "Traceback" not in cli("status", OUTBOX_DATABASE_URL=UNREACHABLE, OUTBOX_DEBUG="0").stderr
    )


def test_version_prints_the_package_and_the_schema_it_needs(cli):
    result = cli("--version", OUTBOX_DATABASE_URL=UNREACHABLE)  # needs no database
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"outbox {version('outbox')}\nschema revision needed: "
        f"{migrate.head()} (`outbox migrate` installs it)\n"
    )


def test_usage_errors_keep_exit_code_2(cli):
    result = cli("status", "--no-such-option", OUTBOX_DATABASE_URL=UNREACHABLE)
    assert result.exit_code == 2 and "No such option" in result.stderr


def test_dlq_requeue_without_a_filter_names_the_cli_flag(cli, db_url):
    result = cli("dlq", "requeue", OUTBOX_DATABASE_URL=db_url)
    assert result.exit_code == 2
    assert "--all" in result.stderr and "everything=True" not in result.stderr


# --- the error tree -------------------------------------------------------------------


def test_the_error_tree_in_the_docstring_lists_every_error():
    from outbox import templates
    from outbox.channel_limits import LimitError
    from outbox.providers import registry
    from outbox.webhooks import base, config

    classes = [
        v
        for v in vars(outbox.errors).values()
        if isinstance(v, type) and issubclass(v, outbox.errors.OutboxError)
    ]
    for cls in [*classes, LimitError]:
        if cls is not outbox.errors.OutboxError:  # the root, drawn without a branch
            assert f"── {cls.__name__}" in outbox.errors.__doc__, cls
    # Moved into outbox.errors, still importable from where they are used.
    assert templates.TemplateError is outbox.errors.TemplateError
    assert registry.ProviderConfigError is outbox.errors.ProviderConfigError
    assert base.Rejected is outbox.errors.Rejected
    assert config.WebhookConfigError is outbox.errors.WebhookConfigError
    assert issubclass(outbox.errors.ProviderConfigError, ValueError)
