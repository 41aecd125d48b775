"""Run the benchmark suite and rewrite docs/benchmarks.md.

    python -m benchmarks                     # every benchmark on the configured server
    python -m benchmarks --target both       # the OUTBOX_DATABASE_URL service, then embedded
    python -m benchmarks --only drain --quick
    python -m benchmarks --issue13           # issue 13's side-by-side comparisons, ~15 min

The benchmarks, in the order they run: enqueue, drain, latency, providers
(through the provider sandbox), provider_clients (each adapter alone against
raw HTTP clients; no database), gate (admission cost), memory (worker RSS),
retention (claim cost with 0, 1M and 5M finished rows kept). Sizes default to
what a 2-core machine runs in roughly 15-25 minutes per server (each
benchmark's own defaults; ``--quick`` for a smoke run of a few minutes). Most
of it is retention building its 5M-row history: it logs its progress and stops
growing after its ``--build-budget`` (600 s), saying so in the results; a
slow worker makes a drain take longer, each bounded by its ``--timeout``.
``--issue13`` runs only what issue 13's targets are stated in (enqueue with
bulk next to the peers, drain with 2 processes, latency, providers and each
adapter against a raw client), in interleaved rounds with PgQueuer and
procrastinate alongside (benchmarks/peers.py; ``pip install -e '.[bench]'``),
sized for about 15 minutes; the page's issue-13 table reads the ratios from that run.
Before each benchmark it waits (bounded) for the machine to be mostly idle and
records how busy it was. Results go to ``benchmarks/results/<server>.json``
(merged: a partial run keeps the other benchmarks' last results) and the page
is rendered from those files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import (  # noqa: E402
    drain,
    enqueue,
    gate,
    latency,
    memory,
    provider_clients,
    providers,
    report,
    retention,
)
from benchmarks.harness import (  # noqa: E402
    log,
    machine,
    open_server,
    save_json,
    terminate_on_sigterm,
    wait_quiet,
)

# In running order: the slowest (retention) last, so the others are done if it is stopped.
MODULES = {
    "enqueue": enqueue,
    "drain": drain,
    "latency": latency,
    "providers": providers,
    "provider_clients": provider_clients,
    "gate": gate,
    "memory": memory,
    "retention": retention,
}
QUICK = {
    "enqueue": [
        "--single",
        "600",
        "--bulk",
        "4000",
        "--rounds",
        "1",
        "--duration",
        "2",
        "--recipients",
        "100",
    ],
    "drain": ["--deliveries", "5000", "--rounds", "1"],
    "latency": ["--enqueues", "100", "--blocks", "1"],
    "providers": ["--deliveries", "200"],
    "provider_clients": ["--sends", "300", "--warmup", "50", "--rounds", "1"],
    "gate": ["--deliveries", "1000", "--recipients", "100", "--rounds", "1"],
    "memory": ["--deliveries", "2000"],
    "retention": ["--sizes", "0,20000", "--queue", "2000", "--rounds", "2"],
}


# --issue13: the benchmarks issue 13 states its targets in, with these options.
ISSUE13 = {
    "enqueue": ["--single", "1000", "--rounds", "3", "--duration", "3"],
    "drain": ["--processes", "2", "--rounds", "3"],
    "latency": ["--enqueues", "600", "--blocks", "3"],
    "providers": ["--processes", "2", "--deliveries", "5000"],
    "provider_clients": ["--sends", "500", "--warmup", "50", "--rounds", "2"],
}


def _options(name: str, quick: bool, diagnose: bool, issue13: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    MODULES[name].add_arguments(parser)
    args = QUICK[name] if quick else ISSUE13.get(name, []) if issue13 else []
    if name in ("drain", "latency") and diagnose:
        args = [*args, "--diagnose"]
    return parser.parse_args(args)


def run_target(
    target: str,
    names: list[str],
    *,
    quick: bool,
    diagnose: bool,
    quiet_wait: float,
    issue13: bool = False,
) -> Path:
    """Run ``names`` against one server; merge into its results file; return that file."""
    with open_server(target) as server:
        log(f"=== {server.label}: PostgreSQL {server.version} ({server.backend})")
        path = report.RESULTS_DIR / f"{server.label}.json"
        stored: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        stored["server"] = server.describe()
        stored.setdefault("benchmarks", {})
        for name in names:
            busy = wait_quiet(timeout=quiet_wait)
            args = _options(name, quick, diagnose, issue13)
            log(f"--- {name} ({server.label}) {vars(args)}")
            at_start = machine()
            started = time.monotonic()
            result = MODULES[name].run(server, args)
            stored["benchmarks"][name] = {
                "meta": {
                    "machine": at_start,
                    "cpu_busy_before": busy,
                    "quick": quick,
                    "issue13": issue13,
                    "wall_seconds": round(time.monotonic() - started, 1),
                    "options": vars(args),
                },
                "result": result,
            }
            print(f"\n## {name} — {server.label}, PostgreSQL {server.version}\n", flush=True)
            print(MODULES[name].markdown(result) + "\n", flush=True)
            save_json(path, stored)  # after each benchmark: a later failure keeps this one
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--target",
        default="configured",
        choices=["configured", "service", "embedded", "both"],
        help="server(s): configured (default), service (OUTBOX_DATABASE_URL), embedded, "
        "or both (service, then embedded)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(MODULES),
        help="benchmarks to run (default: all; with --issue13, those it needs)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--issue13",
        action="store_true",
        help=f"only {', '.join(ISSUE13)} (unless --only), sized for issue 13's side-by-side "
        "comparison with the peers (about 10 minutes)",
    )
    parser.add_argument(
        "--no-diagnose",
        dest="diagnose",
        action="store_false",
        help="skip the extra traced and profiled worker runs of drain and latency",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="wait up to this many seconds for an idle machine before each benchmark",
    )
    parser.add_argument(
        "--no-doc", dest="doc", action="store_false", help="do not rewrite docs/benchmarks.md"
    )
    args = parser.parse_args(argv)
    if args.only is None:
        args.only = list(ISSUE13) if args.issue13 else list(MODULES)
    terminate_on_sigterm()
    targets = ["service", "embedded"] if args.target == "both" else [args.target]
    try:
        for target in targets:
            path = run_target(
                target,
                args.only,
                quick=args.quick,
                diagnose=args.diagnose,
                quiet_wait=args.quiet_wait,
                issue13=args.issue13,
            )
            log(f"results: {path}")
    except KeyboardInterrupt:
        log("interrupted; processes stopped and benchmark databases dropped")
        raise SystemExit(130) from None
    finally:
        if args.doc:
            log(f"wrote {report.write()}")


if __name__ == "__main__":
    main()
