"""The benchmark suite's wiring: `python -m benchmarks` runs every benchmark, the page shows each.

No benchmark runs here (they take minutes and a quiet machine): these check
that each module plugs into the runner and the report, and that the report
renders stored results of the shape each ``run`` returns.
"""

from __future__ import annotations

import pytest

from benchmarks import report, run
from benchmarks.harness import sql

NEW = ("providers", "gate", "memory", "retention")


def test_every_benchmark_is_run_and_rendered() -> None:
    assert list(report.TITLES) == list(run.MODULES)
    assert set(report.MARKDOWN) == set(run.MODULES) == set(run.QUICK)
    for name in NEW:
        assert name in run.MODULES


@pytest.mark.parametrize("name", list(run.MODULES))
@pytest.mark.parametrize("quick", [True, False])
def test_options_parse(name: str, quick: bool) -> None:
    args = run._options(name, quick, diagnose=True)
    module = run.MODULES[name]
    assert callable(module.run) and callable(module.markdown)
    assert vars(args)


def test_quick_retention_stays_small() -> None:
    args = run._options("retention", quick=True, diagnose=False)
    assert max(int(s) for s in args.sizes.split(",")) <= 20_000
    full = run._options("retention", quick=False, diagnose=False)
    assert full.sizes == "0,1000000,5000000"
    assert full.build_budget > 0


def test_each_benchmark_finds_its_named_sql() -> None:
    for name in ("gate_reset", "providers_result", "retention_history", "outbox_fill"):
        assert sql(name)
    with pytest.raises(KeyError, match="no query named"):
        sql("no_such_query")


def _stored(results: dict[str, dict]) -> dict:
    machine = {
        "cpu": "test",
        "cores": 2,
        "memory_gb": 1.0,
        "os": "Linux",
        "python": "3.11",
        "psycopg": "3",
        "libpq": "17",
        "git_commit": "abc1234",
        "uncommitted_product_files": 0,
        "load_average": [0.1, 0.1, 0.1],
        "date": "2026-11-24 00:00 UTC",
    }
    return {
        "server": {
            "label": "service",
            "url": "",
            "version": "15.20",
            "backend": "test",
            "settings": {"fsync": "on"},
        },
        "benchmarks": {
            name: {
                "meta": {
                    "machine": machine,
                    "cpu_busy_before": 0.0,
                    "quick": False,
                    "wall_seconds": 1.0,
                    "options": {},
                },
                "result": result,
            }
            for name, result in results.items()
        },
    }


def _provider_run(adapter: str, processes: int, rate: float) -> dict:
    return {
        "adapter": adapter,
        "channel": "email",
        "processes": processes,
        "deliveries": 100,
        "seconds": 100 / rate,
        "rate": rate,
        "worker_cpu_ms_per_delivery": 1.0,
        "sandbox_cpu_ms_per_delivery": 0.5,
        "not_sent": 0,
        "retried": 0,
        "retry_reasons": "",
    }


def _gate_row(variant: str, processes: int, vs_claim: float) -> dict:
    return {
        "variant": variant,
        "processes": processes,
        "rate": 1000.0,
        "wall_us_per_delivery": 100.0 * vs_claim,
        "cpu_us_per_delivery": 50.0,
        "phase_us_per_delivery": {"claim": 40.0, "render": 10.0, "gate": 20.0, "record": 30.0},
        "gate_ms_per_call": 2.0 if "gate" in variant else None,
        "held": 0,
        "vs_claim": vs_claim,
    }


def _retention_size(history: int, requested: int, vs_empty: float) -> dict:
    return {
        "history": history,
        "requested": requested,
        "build_seconds": 1.0,
        "empty_rates": [1000],
        "rates": [1000],
        "empty_median_per_second": 1000.0,
        "median_per_second": 1000.0 * (1 + vs_empty),
        "vs_empty": vs_empty,
        "table": {"deliveries": history, "finished": history, "events": 3 * history},
        "explain": {
            "execution_ms": 1.5,
            "deliveries_nodes": ["Index Scan using deliveries_due on deliveries: rows=100"],
        },
        "within_tolerance": vs_empty >= -0.1,
    }


def test_report_renders_the_new_sections_and_summary_rows() -> None:
    results = {
        "providers": {
            "settings": {"deliveries": 100, "concurrency": 50},
            "runs": [
                _provider_run("sendgrid", 1, 600.0),
                _provider_run("twilio", 1, 200.0),
                _provider_run("sendgrid", 2, 800.0),
                _provider_run("twilio", 2, 400.0),
            ],
        },
        "gate": {
            "settings": {"deliveries": 100, "recipients": 10, "batch": 10, "rounds": 1},
            "summary": [
                _gate_row("claim", 1, 1.0),
                _gate_row("+render+gate", 1, 1.5),
                _gate_row("  provider cap only", 1, 1.2),
                _gate_row("claim", 2, 1.0),
                _gate_row("+render+gate", 2, 1.4),
            ],
        },
        "memory": {
            "settings": {"deliveries": 100, "concurrency": 100, "batch": 100, "provider": "noop"},
            "idle_rss_mb": 58.9,
            "peak_rss_mb": 62.2,
            "peak_method": "VmHWM since reset",
            "startup_peak_rss_mb": 59.0,
            "drain_seconds": 1.0,
        },
        "retention": {
            "settings": {
                "queue": 100,
                "rounds": 1,
                "claimers": 2,
                "batch": 100,
                "events_per_delivery": 3,
                "tolerance": 0.1,
                "build_budget_s": 600.0,
            },
            "sizes": [_retention_size(0, 0, 0.01), _retention_size(1_000_000, 5_000_000, -0.2)],
            "skipped": [],
            "passed": False,
        },
    }
    page = report.render({"service": _stored(results)})
    for name in NEW:
        assert f"### {report.TITLES[name]}" in page
    assert "200/s (`twilio`) – 600/s (`sendgrid`)" in page
    assert "1.50× / 1.40×" in page
    assert "59 → 62 MB" in page
    assert "-20% at 1,000,000 ❌" in page
    assert "(of 5,000,000 asked: build budget spent)" in page
    assert "**Fail**" in page
    # Sections follow the runner's order, whatever order the results file has.
    assert page.index(report.TITLES["providers"]) < page.index(report.TITLES["retention"])
