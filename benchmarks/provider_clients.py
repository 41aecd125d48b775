"""Each provider adapter against a raw async httpx client, to the same sandbox, in one run.

The ``providers`` benchmark measures the whole worker path (claim, render,
send, record). This one isolates the provider path: in a child process of its
own, ``--concurrency`` tasks share ``--sends`` messages and ``await
adapter.send(message)`` one after another; then, in another child process,
the same number of tasks send the same HTTP requests (method, URL, headers,
body) with one bare ``httpx.AsyncClient`` (HTTP/2 for APNs, as the adapter;
httpx's default pool) and nothing else: no SDK, no outcome, no scrubbing.
That raw client is the reference the target is stated in (adapter >= 0.5x
its rate). A bare ``aiohttp`` session sending the same requests (not APNs:
HTTP/2) shows the ceiling of HTTP/1.1 on this machine. ``--before PYTHON``
adds the adapter as another interpreter's ``outbox`` has it (main's venv:
before/after in one run).

The runs of one adapter alternate, ``--rounds`` times, so a neighbour loading
the machine weighs on all alike; each figure is the median over rounds. Per
run: sends per second (wall clock over the measured sends, after
``--warmup`` unmeasured ones that open connections and fetch tokens),
the child's CPU (user+sys, every thread) per send, and the sandbox's CPU per
send (the sandbox shares the two cores, so it bounds both rates).

    python -m benchmarks.provider_clients [--adapters apns fcm] [--sends 3000] [--rounds 3]
    python -m benchmarks.provider_clients --profile twilio   # cProfile one adapter's child
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import io
import itertools
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

# Only the standard library and httpx at the top: a child process loads this
# file by path, without this checkout on sys.path, so that the ``outbox`` it
# imports is its interpreter's own (``--before``).

ADAPTERS = {  # adapter -> the channel it serves
    "sendgrid": "email",
    "mailchimp": "email",
    "twilio": "sms",
    "vonage": "sms",
    "apns": "push",
    "fcm": "push",
}
BODY = "Order 12345 is confirmed."
SUBJECT = "Order 12345"
TITLE = "Order"


def destination(adapter: str, i: int) -> str:
    """The i-th message's destination, in the form the adapter's channel takes."""
    channel = ADAPTERS[adapter]
    if channel == "email":
        return f"user{i}@example.com"
    if channel == "sms":
        return f"+1415{i % 10_000_000:07d}"
    return f"{i:064x}" if adapter == "apns" else f"fcm-registration-token-{i:08d}"


def message(adapter: str, i: int) -> Any:
    """The i-th ``Message`` for ``adapter`` (what a worker hands it after rendering)."""
    from outbox.providers.base import Message

    channel = ADAPTERS[adapter]
    return Message(
        delivery_id=1_000_000 + i,
        notification_id=2_000_000 + i,
        message_id=f"bench-{i}",
        channel=channel,
        destination=destination(adapter, i),
        attempt=1,
        body=BODY,
        subject=SUBJECT if channel == "email" else None,
        title=TITLE if channel == "push" else None,
        data={"order": str(i)} if channel == "push" else {},
        device_platform=adapter if channel == "push" else None,
        device_environment="production" if adapter == "apns" else None,
    )


# --- the raw client: one request per send, built from a template -----------------------

Request = tuple[str, dict[str, str], bytes]  # url, headers, body
RawBuilder = Callable[[int], Request]


def _form(fields: dict[str, str]) -> bytes:
    return httpx.QueryParams(fields).__str__().encode()


def raw_builder(adapter: str, s: Any) -> RawBuilder:
    """The request the adapter sends for message i, built with as little work as possible."""
    sec = lambda v: v.get_secret_value() if hasattr(v, "get_secret_value") else v  # noqa: E731
    json_type = {"content-type": "application/json"}
    form_type = {"content-type": "application/x-www-form-urlencoded"}
    if adapter == "sendgrid":
        url = f"{s.sendgrid_base_url}/v3/mail/send"
        headers = {**json_type, "authorization": f"Bearer {sec(s.sendgrid_api_key)}"}

        def sendgrid(i: int) -> Request:
            mail = {
                "from": {"email": s.sendgrid_from_email},
                "subject": SUBJECT,
                "personalizations": [{"to": [{"email": destination(adapter, i)}]}],
                "content": [{"type": "text/plain", "value": BODY}],
                "custom_args": {"outbox_delivery_id": str(1_000_000 + i)},
            }
            return url, headers, json.dumps(mail).encode()

        return sendgrid
    if adapter == "mailchimp":
        url = f"{s.mailchimp_base_url}/messages/send"
        key = sec(s.mailchimp_api_key)

        def mailchimp(i: int) -> Request:
            body = {
                "key": key,
                "message": {
                    "subject": SUBJECT,
                    "from_email": s.mailchimp_from_email,
                    "to": [{"email": destination(adapter, i), "type": "to"}],
                    "metadata": {"outbox_delivery_id": str(1_000_000 + i)},
                    "text": BODY,
                },
                "async": False,
            }
            return url, json_type, json.dumps(body).encode()

        return mailchimp
    if adapter == "twilio":
        sid, token = s.twilio_account_sid, sec(s.twilio_auth_token)
        url = f"{s.twilio_base_url}/2010-04-01/Accounts/{sid}/Messages.json"
        basic = base64.b64encode(f"{sid}:{token}".encode()).decode()
        headers = {**form_type, "authorization": f"Basic {basic}"}

        def twilio(i: int) -> Request:
            form = {"To": destination(adapter, i), "Body": BODY, "From": s.twilio_from_number}
            return url, headers, _form(form)

        return twilio
    if adapter == "vonage":
        url = f"{s.vonage_base_url}/sms/json"
        auth = {"api_key": s.vonage_api_key, "api_secret": sec(s.vonage_api_secret)}

        def vonage(i: int) -> Request:
            form = {
                **auth,
                "from": s.vonage_from,
                "to": destination(adapter, i)[1:],
                "text": BODY,
                "client-ref": str(1_000_000 + i),
            }
            return url, form_type, _form(form)

        return vonage
    if adapter == "apns":
        import jwt

        key = Path(s.apns_private_key_file).read_text()
        token = jwt.encode(
            {"iss": s.apns_team_id, "iat": int(time.time())},
            key,
            algorithm="ES256",
            headers={"kid": s.apns_key_id},
        )
        headers = {
            "apns-topic": s.apns_topic,
            "apns-push-type": "alert",
            "apns-priority": "5",
            "authorization": f"bearer {token}",
        }

        def apns(i: int) -> Request:
            body = {"aps": {"alert": {"body": BODY, "title": TITLE}}, "order": str(i)}
            return (
                f"{s.apns_base_url}/3/device/{destination(adapter, i)}",
                {**headers, "apns-collapse-id": str(2_000_000 + i)},
                json.dumps(body).encode(),
            )

        return apns
    if adapter == "fcm":
        import google.auth.transport.requests
        from google.oauth2 import service_account

        credential = service_account.Credentials.from_service_account_file(
            str(s.fcm_credentials_file),
            scopes=["https://www.googleapis.com/auth/firebase.messaging"],
        )
        credential.refresh(google.auth.transport.requests.Request())  # once, unmeasured
        url = f"{s.fcm_base_url}/v1/projects/{s.fcm_project_id}/messages:send"
        headers = {**json_type, "authorization": f"Bearer {credential.token}"}

        def fcm(i: int) -> Request:
            body = {
                "message": {
                    "token": destination(adapter, i),
                    "notification": {"title": TITLE, "body": BODY},
                    "data": {"order": str(i)},
                    "android": {"collapse_key": str(2_000_000 + i), "priority": "normal"},
                    "apns": {"headers": {"apns-collapse-id": str(2_000_000 + i)}},
                }
            }
            return url, headers, json.dumps(body).encode()

        return fcm
    raise ValueError(f"no raw client for {adapter!r}")


# --- one child: send ``sends`` messages with ``concurrency`` tasks ------------------------


async def _drive(send: Callable[[int], Awaitable[bool]], start: int, n: int, tasks: int) -> int:
    """``tasks`` coroutines take message numbers start..start+n-1 in turn; how many failed."""
    numbers = iter(range(start, start + n))
    failed = 0

    async def one() -> None:
        nonlocal failed
        for i in numbers:
            if not await send(i):
                failed += 1

    await asyncio.gather(*(one() for _ in range(tasks)))
    return failed


async def child(kind: str, adapter: str, sends: int, warmup: int, concurrency: int) -> dict:
    """Run in the child process: warm up, then time ``sends`` sends; the figures as a dict."""
    from outbox.providers.base import OutcomeKind
    from outbox.settings import Settings

    channel = ADAPTERS[adapter]
    settings = Settings(
        **{f"providers_{channel}": [adapter]},  # type: ignore[arg-type]
        worker_concurrency=concurrency,
    )
    close: Callable[[], Awaitable[None]]
    if kind == "httpx":
        build = raw_builder(adapter, settings)
        verify: Any = True
        if adapter == "apns":
            import ssl

            verify = ssl.create_default_context(cafile=str(settings.apns_ca_file))
        # httpx's own pool defaults: sized to the concurrency (50 kept) it costs more CPU.
        client = httpx.AsyncClient(http2=adapter == "apns", verify=verify)

        async def send(i: int) -> bool:
            url, headers, body = build(i)
            response = await client.post(url, headers=headers, content=body)
            return response.status_code < 300

        close = client.aclose
    elif kind == "aiohttp":
        import aiohttp

        build = raw_builder(adapter, settings)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

        async def send(i: int) -> bool:
            url, headers, body = build(i)
            async with session.post(url, headers=headers, data=body) as response:
                await response.read()
                return response.status < 300

        close = session.close
    else:
        from outbox.providers.registry import build_providers

        provider = build_providers(settings)[adapter]
        messages = {}

        async def send(i: int) -> bool:
            return (await provider.send(messages.pop(i))).kind is OutcomeKind.SENT

        close = provider.aclose
        # Messages are built before the clock starts: rendering is the worker's work, not ours.
        messages = {i: message(adapter, i) for i in range(warmup + sends)}
    profile = cProfile.Profile() if os.environ.get("BENCH_PROFILE") else None
    try:
        warm_failed = await _drive(send, 0, warmup, concurrency)
        cpu0, t0 = time.process_time(), time.perf_counter()
        if profile:
            profile.enable()
        failed = await _drive(send, warmup, sends, concurrency)
        if profile:
            profile.disable()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await close()
    result = {"seconds": seconds, "cpu": cpu, "failed": failed + warm_failed}
    if profile:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(40)
        result["profile"] = out.getvalue()
    return result


# --- the parent: sandbox, interleaved children, medians ----------------------------------


# Loads this file by path in the child (see the imports above) and runs main().
_CHILD_BOOT = (
    "import importlib.util as u, sys; "
    "s = u.spec_from_file_location('provider_clients', sys.argv[1]); "
    "m = u.module_from_spec(s); s.loader.exec_module(m); m.main(sys.argv[2:])"
)


def _child_run(
    workdir: Path,
    sandbox: subprocess.Popen[bytes],
    env: dict[str, str],
    kind: str,
    adapter: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    # "before": the adapter as another interpreter's outbox has it (say, main's venv).
    from benchmarks.drain import cpu_seconds

    python = args.before if kind == "before" else sys.executable
    command = [
        python,
        "-c",
        _CHILD_BOOT,
        __file__,
        "--child",
        "adapter" if kind == "before" else kind,
        adapter,
        str(args.sends),
        str(args.warmup),
        str(args.concurrency),
    ]
    sandbox0 = cpu_seconds(sandbox.pid)
    done = subprocess.run(
        command, env=env, cwd=workdir, capture_output=True, text=True, timeout=args.timeout
    )
    sandbox_cpu = cpu_seconds(sandbox.pid) - sandbox0
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {adapter} child failed:\n{done.stderr[-3000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    r["rate"] = args.sends / r["seconds"]
    r["cpu_ms"] = 1000 * r["cpu"] / args.sends
    r["sandbox_cpu_ms"] = 1000 * sandbox_cpu / (args.sends + args.warmup)
    return r


def run(server: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Every adapter and its raw clients, interleaved, against one sandbox (no database)."""
    from benchmarks.harness import Processes, clean_env, log
    from benchmarks.providers import start_sandbox
    from outbox.sandbox import SandboxClient

    kinds_of = {
        a: ["httpx", *(["aiohttp"] if a != "apns" else []), *(["before"] if args.before else [])]
        + ["adapter"]
        for a in args.adapters
    }
    runs: dict[str, dict[str, list[dict]]] = {
        a: {k: [] for k in kinds_of[a]} for a in args.adapters
    }
    with (
        tempfile.TemporaryDirectory(prefix="outbox-bench-") as tmp,
        Processes(Path(tmp)) as procs,
    ):
        sandbox, sandbox_env, http_url = start_sandbox(procs, Path(tmp) / "sandbox")
        env = clean_env() | sandbox_env  # OUTBOX_* settings pointing every adapter there
        if args.profile:
            env["BENCH_PROFILE"] = "1"
        with contextlib.closing(SandboxClient(http_url)) as client:
            for rnd, adapter in itertools.product(range(args.rounds), args.adapters):
                kinds = kinds_of[adapter]
                # Each round starts with another kind: none always runs on a fresh sandbox.
                for kind in kinds[rnd % len(kinds) :] + kinds[: rnd % len(kinds)]:
                    client.reset()  # the recorder keeps every request: same state each run
                    r = _child_run(Path(tmp), sandbox, env, kind, adapter, args)
                    if "profile" in r:
                        print(f"\n### {kind} {adapter} round {rnd}\n{r.pop('profile')}")
                    runs[adapter][kind].append(r)
                    log(
                        f"round {rnd} {adapter} {kind}: {r['rate']:,.0f}/s, "
                        f"{r['cpu_ms']:.3f} ms CPU/send, sandbox {r['sandbox_cpu_ms']:.3f} ms"
                        + (f", {r['failed']} FAILED" if r["failed"] else "")
                    )
    from benchmarks.harness import median

    summary = []
    for adapter, kinds in runs.items():
        row: dict[str, Any] = {"adapter": adapter, "kinds": {}}
        for kind, rs in kinds.items():
            row["kinds"][kind] = {
                "rate": median([r["rate"] for r in rs]),
                "cpu_ms": median([r["cpu_ms"] for r in rs]),
                "sandbox_cpu_ms": median([r["sandbox_cpu_ms"] for r in rs]),
                "failed": sum(r["failed"] for r in rs),
                # Per round, against the raw httpx run of the same round.
                "vs_httpx": [
                    r["rate"] / h["rate"] for r, h in zip(rs, kinds["httpx"], strict=True)
                ],
            }
        summary.append(row)
    return {
        "settings": {
            k: getattr(args, k)
            for k in ("adapters", "sends", "warmup", "concurrency", "rounds", "before")
        },
        "summary": summary,
    }


def _ratio(x: dict[str, Any]) -> str:
    from benchmarks.harness import median

    per_round = ", ".join(f"{v:.2f}" for v in x["vs_httpx"])
    return f"**{median(x['vs_httpx']):.2f}×** ({per_round})"


def markdown(result: dict[str, Any]) -> str:
    from benchmarks.harness import md_table, num

    s = result["settings"]
    rows = []
    for r in result["summary"]:
        for kind, label in (
            ("httpx", "raw httpx (reference)"),
            ("aiohttp", "raw aiohttp"),
            ("before", "adapter, before"),
            ("adapter", "adapter"),
        ):
            if kind not in r["kinds"]:
                continue
            x = r["kinds"][kind]
            rows.append(
                (
                    f"`{r['adapter']}`",
                    label,
                    f"**{num(x['rate'])}**",
                    f"{x['cpu_ms']:.2f}",
                    _ratio(x),
                    f"{x['sandbox_cpu_ms']:.2f}",
                    num(x["failed"]),
                )
            )
    before = f" `before` is the adapter run by `{s['before']}`'s outbox;" if s["before"] else ""
    return "\n\n".join(
        [
            f"{num(s['sends'])} sends per run (after {num(s['warmup'])} to warm up) by "
            f"{s['concurrency']} concurrent tasks in one process; each adapter's runs and raw "
            f"clients sending the same requests to the same sandbox alternate, medians of "
            f"{s['rounds']} rounds.{before} CPU = that process's user+sys per send; the ratio "
            f"is sends/s over the raw httpx client's in the same round.",
            md_table(
                [
                    "adapter",
                    "client",
                    "sends/s",
                    "CPU ms/send",
                    "÷ raw httpx (per round)",
                    "sandbox CPU ms/send",
                    "failed",
                ],
                rows,
            ),
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from benchmarks.harness import add_before_argument

    parser.add_argument(
        "--adapters", nargs="+", choices=list(ADAPTERS), default=list(ADAPTERS), help="adapters"
    )
    parser.add_argument("--sends", type=int, default=3000, help="measured sends per run")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured sends first")
    parser.add_argument("--concurrency", type=int, default=50, help="sends in flight")
    parser.add_argument("--rounds", type=int, default=3, help="raw/adapter pairs per adapter")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on one run")
    parser.add_argument("--profile", action="store_true", help="cProfile each child")
    add_before_argument(
        parser,
        "also run each adapter with this interpreter's outbox, e.g. another checkout's "
        ".venv/bin/python",
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        kind, adapter, sends, warmup, concurrency = argv[1:6]
        r = asyncio.run(child(kind, adapter, int(sends), int(warmup), int(concurrency)))
        print(json.dumps(r))
        return
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.provider_clients",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    result = run(None, args)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
