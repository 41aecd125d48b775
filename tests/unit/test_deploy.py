"""Deployment files: the compose file, Prometheus rules and config, Grafana, autoscaling.

Structural checks always run; the real tools run when they are installed
(``docker compose`` or ``docker-compose`` for ``config``, ``promtool`` for the
rules and their unit tests) and are skipped, saying so, when they are not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import outbox.metrics  # noqa: F401 - registers the worker's metrics

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "docker-compose.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
    "summary": ("", "_count", "_sum", "_created"),
}
# Series Prometheus itself makes.
_PROMETHEUS_SERIES = {"up"}


def _exported(registry) -> set[str]:
    names = set()
    for family in registry.collect():
        if family.name.startswith("outbox_"):
            names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
    return names


def defined_metrics() -> set[str]:
    """Every outbox_* series name the code exports: the workers' and the webhook receiver's."""
    names = _exported(REGISTRY)
    try:
        from outbox.webhooks import metrics as webhook_metrics
    except ImportError:  # pragma: no cover - the receiver is part of the package
        return names
    return names | _exported(webhook_metrics.REGISTRY)


def referenced(expr: str) -> set[str]:
    """The metric names a PromQL expression uses (outbox_* and Prometheus' own)."""
    words = set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*(?=[{\[)\s]|$)", expr))
    return {w for w in words if w.startswith("outbox_") or w in _PROMETHEUS_SERIES}


def load(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# -- docker-compose.yml -------------------------------------------------------------------------


def test_compose_has_every_service_wired():
    doc = load(COMPOSE)
    services = doc["services"]
    assert {
        "postgres",
        "migrate",
        "worker-1",
        "worker-2",
        "webhooks",
        "api",
        "sandbox",
        "prometheus",
        "grafana",
    } <= set(services)
    for name in ("worker-1", "worker-2", "webhooks", "api"):
        assert (
            services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        )
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["command"] == ["migrate"]
    assert services["webhooks"]["command"] == ["webhooks"]
    assert services["sandbox"]["command"][0] == "sandbox"
    # Workers export metrics on distinct ports, published and scraped.
    ports = {services[w]["environment"]["OUTBOX_METRICS_PORT"] for w in ("worker-1", "worker-2")}
    assert ports == {"9101", "9102"}
    prometheus = load(DEPLOY / "prometheus" / "prometheus.yml")
    targets = {
        t
        for job in prometheus["scrape_configs"]
        if job["job_name"] == "outbox-worker"
        for cfg in job["static_configs"]
        for t in cfg["targets"]
    }
    assert targets == {f"sandbox:{p}" for p in ports}
    assert any(p.endswith(":9101:9101") for p in services["sandbox"]["ports"])
    # Least privilege: migrations as the owner, the workers as a worker-role login, the
    # receiver as a webhooks-role login (deploy/postgres/init.sql makes both).
    assert "outbox_owner" in services["migrate"]["environment"]["OUTBOX_DATABASE_URL"]
    for name in ("worker-1", "worker-2"):
        assert "outbox_svc" in services[name]["environment"]["OUTBOX_DATABASE_URL"]
    hooks_env = services["webhooks"]["environment"]
    assert "outbox_hooks" in hooks_env["OUTBOX_DATABASE_URL"]
    assert not any("outbox_svc" in str(v) for v in hooks_env.values())
    init = (DEPLOY / "postgres" / "init.sql").read_text()
    assert "CREATE ROLE outbox_hooks LOGIN" in init and "IN ROLE outbox_webhooks" in init
    # The group roles are the server's: only this deployment's logins may connect (P1).
    assert "REVOKE CONNECT ON DATABASE outbox FROM PUBLIC" in init
    # The API as its own role's login, made by the init script.
    assert services["api"]["command"] == ["api"]
    assert "outbox_api_svc:" in services["api"]["environment"]["OUTBOX_DATABASE_URL"]
    assert "CREATE ROLE outbox_api_svc LOGIN PASSWORD 'outbox_api_svc' IN ROLE outbox_api" in init
    # Files the compose file mounts exist.
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source


def test_compose_commands_are_outbox_commands():
    from outbox.cli import _register, app

    if not any(c.name == "status" for c in app.registered_commands):
        _register()
    commands = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    for name, service in load(COMPOSE)["services"].items():
        if service.get("image", "").startswith("outbox") or "build" in service:
            assert service["command"][0] in commands, name


def _compose_cli() -> list[str] | None:
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) is None:
            continue
        probe = subprocess.run([*argv, "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return argv
    return None


def test_compose_config_validates():
    argv = _compose_cli()
    if argv is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    result = subprocess.run(
        [*argv, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ | {"COMPOSE_PROJECT_NAME": "outbox"},
    )
    assert result.returncode == 0, result.stderr


def test_sandbox_env_wrapper_loads_the_settings(tmp_path):
    env_file = tmp_path / "outbox.env"
    env_file.write_text(
        "# written by the sandbox\nOUTBOX_TWILIO_BASE_URL='http://127.0.0.1:4010'\n"
    )
    result = subprocess.run(
        [str(DEPLOY / "with-sandbox-env.sh"), "sh", "-c", "echo $OUTBOX_TWILIO_BASE_URL"],
        capture_output=True,
        text=True,
        env=os.environ | {"OUTBOX_SANDBOX_ENV": str(env_file)},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "http://127.0.0.1:4010"


def test_dockerfile_ships_the_sql_and_runs_unprivileged():
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["outbox"]' in text
    assert re.search(r"^USER outbox$", text, re.MULTILINE)
    # The image installs the package as a wheel does: the SQL and migrations ship inside it.
    assert "pip install --no-deps ." in text and "COPY . ." in text and " -e ." not in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".outbox", ".env", ".git"} <= set(ignored)


# -- Prometheus ------------------------------------------------------------------------------------


def _rules() -> list[dict]:
    return [rule for group in load(ALERTS)["groups"] for rule in group["rules"]]


def test_alerts_cover_what_on_call_needs():
    names = {r["alert"] for r in _rules()}
    assert {
        "OutboxQueueBacklog",
        "OutboxDeliveryFailureRate",
        "OutboxLatencyOverSLA",
        "OutboxOldestPendingTooOld",
        "OutboxProviderBreakerOpen",
    } <= names
    for rule in _rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_alert_expressions_use_only_metrics_the_code_defines():
    defined = defined_metrics()
    assert {
        "outbox_deliveries_total",
        "outbox_queue_due",
        "outbox_delivery_latency_seconds_bucket",
        "outbox_oldest_pending_age_seconds",
        "outbox_provider_breaker_state",
    } <= defined
    for rule in _rules():
        used = referenced(rule["expr"])
        assert used, rule["alert"]
        unknown = used - defined - _PROMETHEUS_SERIES
        assert not unknown, (rule["alert"], unknown)


def test_the_expression_parser_finds_names():
    assert referenced("max by (channel) (outbox_queue_due) > 5") == {"outbox_queue_due"}
    assert referenced('rate(outbox_x_total{a="b"}[5m]) / up') == {"outbox_x_total", "up"}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, cwd=DEPLOY / "prometheus"
    )


def test_promtool_checks_the_rules_and_config():
    for args in (("check", "rules", "alerts.yml"), ("check", "config", "prometheus.yml")):
        result = _promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass():
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


# -- Grafana ---------------------------------------------------------------------------------------


def test_grafana_dashboard_queries_known_metrics_and_provisioned_sources():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "outbox.json").read_text())
    sources = {
        d["uid"]
        for d in load(DEPLOY / "grafana" / "provisioning" / "datasources" / "outbox.yml")[
            "datasources"
        ]
    }
    defined = defined_metrics()
    exprs = 0
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in sources, panel["title"]
        for target in panel["targets"]:
            if "expr" in target:
                exprs += 1
                unknown = referenced(target["expr"]) - defined - _PROMETHEUS_SERIES
                assert not unknown, (panel["title"], unknown)
    assert exprs >= 10
    provider = load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "outbox.yml")["providers"][
        0
    ]
    compose = load(COMPOSE)["services"]["grafana"]
    assert any(v.endswith(":" + provider["options"]["path"] + ":ro") for v in compose["volumes"])


# -- autoscaling --------------------------------------------------------------------------------


def test_autoscaling_examples_parse_and_target_the_workers():
    keda = list(yaml.safe_load_all((DEPLOY / "autoscaling" / "keda-postgresql.yaml").read_text()))
    scaled = next(d for d in keda if d["kind"] == "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "outbox-worker"
    assert scaled["spec"]["triggers"][0]["type"] == "postgresql"
    hpa = yaml.safe_load((DEPLOY / "autoscaling" / "hpa-prometheus-adapter.yaml").read_text())
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["name"] in defined_metrics()


def test_the_keda_query_runs_as_a_reader(conn):
    """The scaler's query works on a migrated database, with only outbox_reader's rights."""
    keda = list(yaml.safe_load_all((DEPLOY / "autoscaling" / "keda-postgresql.yaml").read_text()))
    query = next(d for d in keda if d["kind"] == "ScaledObject")["spec"]["triggers"][0]["metadata"][
        "query"
    ]
    conn.execute("SET ROLE outbox_reader")
    assert conn.execute(query).fetchone()[0] == 0
