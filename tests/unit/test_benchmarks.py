"""The benchmark suite's wiring: `python -m benchmarks` runs every benchmark, the page shows each.

No benchmark runs here (they take minutes and a quiet machine): these check
that each module plugs into the runner and the report, and that the report
renders stored results of the shape each ``run`` returns.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import latency, peers, report, run
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


# --- peers (benchmarks/peers.py) and the issue-13 table ---------------------------------


def test_issue13_preset_runs_what_the_targets_need() -> None:
    assert set(run.ISSUE13) == {"enqueue", "drain", "latency", "providers", "provider_clients"}
    for name in run.ISSUE13:
        args = run._options(name, quick=False, diagnose=False, issue13=True)
        assert vars(args)
    assert run._options("drain", False, False, issue13=True).processes == [2]
    assert run._options("enqueue", False, False, issue13=True).batch == 1000
    assert run._options("providers", False, False, issue13=True).processes == [2]
    # --quick still wins: a smoke run stays small.
    assert run._options("drain", True, False, issue13=True).deliveries == 5000


def test_peer_worker_command_names_each_process_and_passes_settings(tmp_path: Path) -> None:
    argv = peers.worker_command("pgqueuer", "dbname=x", 1, batch=100, record=None)
    assert argv[-6:] == [
        "pgqueuer",
        "dbname=x",
        "--name",
        "bench-peer-pgqueuer-1",
        "--batch",
        "100",
    ]
    record = tmp_path / "r.txt"
    argv = peers.worker_command("procrastinate", "dbname=x", 0, batch=None, record=record)
    assert "--batch" not in argv and argv[-2:] == ["--record", str(record)]
    assert sql("pgqueuer_drain_result") and sql("procrastinate_reset")


def test_peer_handler_records_when_each_job_started(tmp_path: Path) -> None:
    record = tmp_path / "r.txt"
    handle = peers._handler(str(record))
    handle(peers.job(7))
    handle(peers.job(8))
    lines = [line.split() for line in record.read_text().splitlines()]
    assert [n for _, n in lines] == ["7", "8"]
    assert float(lines[0][0]) <= float(lines[1][0])
    assert peers._handler(None)(peers.job(1)) is None


def test_bulk_rounds_sum_outbox_rows_like_one_round() -> None:
    runs = [
        {"system": "outbox", "jobs": 1000, "seconds": 1.0, "rate": 1000.0},
        {"system": "outbox", "jobs": 1000, "seconds": 0.5, "rate": 2000.0},
        {"system": "pgqueuer", "jobs": 3000, "seconds": 1.0, "rate": 3000.0},
    ]
    by = peers._by_system(runs)
    assert by["outbox"] == {"rate": 2000 / 1.5, "runs": [1000.0, 2000.0]}
    assert by["pgqueuer"]["rate"] == 3000.0


def _issue13_results(outbox_bulk: float, outbox_drain: float, p50: float, p99: float) -> dict:
    lat = {"n": 10, "p50": p50, "p95": p99, "p99": p99, "max": p99, "min": 0.1, "mean": p50}
    return {
        "enqueue": {
            "bulk_peers": {
                "batch": 1000,
                "rounds": 3,
                "versions": {"pgqueuer": "1.6.0", "procrastinate": "3.10.0"},
                "systems": {
                    "outbox": {"rate": outbox_bulk, "runs": [outbox_bulk]},
                    "pgqueuer": {"rate": 40_000.0, "runs": [40_000.0]},
                    "procrastinate": {"rate": 5_000.0, "runs": [5_000.0]},
                },
            }
        },
        "drain": {
            "summary": [
                {
                    "processes": 2,
                    "outbox_rate": outbox_drain,
                    "peers": {
                        "pgqueuer": {"rate": 10_000.0, "runs": [10_000.0]},
                        "procrastinate": {"rate": 300.0, "runs": [300.0]},
                    },
                }
            ]
        },
        "latency": {
            "outbox": lat,
            "listen": lat | {"p99": 2.0},
            "peers": {"pgqueuer": lat | {"p99": 5.0}, "procrastinate": lat | {"p99": 9.0}},
        },
    }


def test_issue13_table_marks_each_target_from_the_ratios() -> None:
    table = peers.targets_markdown(
        {
            "service": _issue13_results(50_000.0, 16_000.0, 1.5, 4.0),
            "embedded": _issue13_results(20_000.0, 14_000.0, 2.0, 6.0),
        }
    )
    lines = table.splitlines()
    assert lines[0] == "| issue-13 target | service | embedded |"
    bulk, drain_row, p99, p50 = lines[2:6]
    assert "**1.25×** ✅" in bulk and "**0.50×** ❌" in bulk
    assert "**1.60×** ✅" in drain_row and "**1.40×** ❌" in drain_row
    assert "Outbox 4.00 vs PgQueuer 5.00, procrastinate 9.00" in p99
    assert p99.count("✅") == 1 and p99.count("❌") == 1
    assert "1.50 ✅" in p50 and "2.00 ❌" in p50


def test_issue13_table_says_not_run_without_peer_results() -> None:
    results = {"latency": {"outbox": {"p50": 1.0, "p99": 2.0}}}
    lines = peers.targets_markdown({"service": results}).splitlines()
    # A latency result without the peers is from another run: no target is read from it.
    assert all(line.endswith("| not run |") for line in lines[2:])


def test_issue13_table_marks_the_provider_path_targets() -> None:
    def clients(ratios: dict[str, list[float]]) -> dict[str, object]:
        return {
            "summary": [
                {"adapter": name, "kinds": {"adapter": {"vs_httpx": r}}}
                for name, r in ratios.items()
            ]
        }

    def through(rates: dict[str, float]) -> dict[str, object]:
        runs = [
            {"adapter": a, "processes": 2, "version": "this", "rate": r} for a, r in rates.items()
        ]
        # A 1-worker run and a --before run are not what the target reads.
        runs += [
            {"adapter": "apns", "processes": 1, "version": "this", "rate": 10.0},
            {"adapter": "apns", "processes": 2, "version": "before", "rate": 10.0},
        ]
        return {"runs": runs}

    met = {
        "provider_clients": clients({"apns": [0.4, 0.6, 0.7], "fcm": [5.0, 6.0, 7.0]}),
        "providers": through({"apns": 1_100.0, "twilio": 1_040.0}),
    }
    missed = {
        "provider_clients": clients({"apns": [0.4, 0.45, 0.7], "fcm": [5.0, 6.0, 7.0]}),
        "providers": through({"apns": 1_100.0, "twilio": 1_000.0}),
    }
    lines = peers.targets_markdown({"service": met, "embedded": missed}).splitlines()
    raw, slowest = lines[-2:]
    assert "lowest 0.60× (`apns`), highest 6.00× (`fcm`) ✅" in raw
    assert "lowest 0.45× (`apns`)" in raw and raw.endswith("❌ |")
    assert "`twilio` 1,040/s = **3.02×** 344/s ✅" in slowest
    assert "`twilio` 1,000/s = **2.91×** 344/s ❌" in slowest


def test_report_renders_the_peers_next_to_outbox() -> None:
    full = _issue13_results(50_000.0, 16_000.0, 1.5, 4.0)
    full["drain"]["summary"][0] |= {"raw_rate": 30_000.0, "floor_rate": 60_000.0}
    page = report.targets(
        {"service": _stored({"latency": full["latency"], "enqueue": full["enqueue"]})}
    )
    assert "Outbox 4.00 vs PgQueuer 5.00" in page and "| not run |" in page
    assert "PgQueuer /s" in peers.drain_markdown(full["drain"]["summary"])
    bulk = peers.bulk_markdown(full["enqueue"]["bulk_peers"])
    assert "PgQueuer 1.6.0 `Queries.enqueue` (lists) | 40,000" in bulk
    assert "1.25×" in bulk


def test_latency_lists_the_slowest_wakeups_with_what_overlapped() -> None:
    samples = [
        {"commit": 10.0, "sent": 10.002},
        {"commit": 20.0, "sent": 20.010},
    ]
    spans = [
        {"name": "claim", "start": 20.001, "end": 20.009, "n": 1},
        {"name": "gc2", "start": 20.0005, "end": 20.0015, "n": 3},
        {"name": "record", "start": 30.0, "end": 30.1, "n": 1},
    ]
    worst = latency.slowest(samples, spans, count=1)
    assert len(worst) == 1 and round(worst[0]["total_ms"], 3) == 10.0
    assert set(worst[0]["overlaps"]) == {"claim", "gc2"}
    assert round(worst[0]["overlaps"]["claim"], 3) == 8.0
