"""The sandbox's own API, under ``/_sandbox/`` on the plain HTTP listener.

    GET  /_sandbox/health                      {"ok": true}
    GET  /_sandbox/requests?provider=&destination=&since=   recorded requests
    GET  /_sandbox/receipts?provider=          receipts sent back
    GET  /_sandbox/receipts/pending            {"pending": receipts not yet answered}
    GET  /_sandbox/counts                      per provider: total and per answer
    POST /_sandbox/reset                       forget records; start-up faults back
    GET  /_sandbox/faults                      the fault configuration in force
    POST /_sandbox/faults                      change it (see outbox.sandbox.faults)
    GET  /_sandbox/webhooks                    where receipts go
    POST /_sandbox/webhooks                    {"sendgrid": URL or null}
    GET  /_sandbox/info                        URLs, CA file, public keys, account ids

Nothing here returns a secret.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from outbox.sandbox.faults import FaultConfigError
from outbox.sandbox.route_context import SandboxContext

WEBHOOK_PROVIDERS = ("sendgrid",)


async def _json_body(request: Request) -> object:
    raw = await request.body()
    return json.loads(raw) if raw.strip() else {}


def routes(ctx: SandboxContext, info: dict) -> list[Route]:
    """The control routes; ``info`` is what ``/_sandbox/info`` shows."""

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def requests(request: Request) -> Response:
        q = request.query_params
        since = int(q["since"]) if q.get("since", "").isdigit() else 0
        found = ctx.recorder.requests(q.get("provider"), q.get("destination"), since)
        return JSONResponse({"requests": [r.to_json() for r in found]})

    async def receipts(request: Request) -> Response:
        found = ctx.recorder.receipts(request.query_params.get("provider"))
        return JSONResponse({"receipts": [r.to_json() for r in found]})

    async def receipts_pending(request: Request) -> Response:
        return JSONResponse({"pending": ctx.receipts.pending})

    async def counts(request: Request) -> Response:
        return JSONResponse(ctx.recorder.counts())

    async def reset(request: Request) -> Response:
        await request.body()  # read first: see outbox.sandbox.route_context
        ctx.recorder.clear()
        ctx.faults.reset()
        return JSONResponse({"ok": True})

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                ctx.faults.configure(await _json_body(request))  # type: ignore[arg-type]
            except (FaultConfigError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(ctx.faults.snapshot())

    async def webhooks(request: Request) -> Response:
        if request.method == "POST":
            try:
                doc = await _json_body(request)
            except ValueError as exc:
                return JSONResponse({"error": f"invalid JSON: {exc}"}, status_code=400)
            if not isinstance(doc, dict) or set(doc) - set(WEBHOOK_PROVIDERS):
                return JSONResponse(
                    {"error": f"expected an object with keys from {list(WEBHOOK_PROVIDERS)}"},
                    status_code=400,
                )
            for provider, url in doc.items():
                if url:
                    ctx.webhooks[provider] = str(url)
                else:
                    ctx.webhooks.pop(provider, None)
        return JSONResponse(ctx.webhooks)

    async def show_info(request: Request) -> Response:
        return JSONResponse(info)

    return [
        Route("/_sandbox/health", health),
        Route("/_sandbox/requests", requests),
        Route("/_sandbox/receipts", receipts),
        Route("/_sandbox/receipts/pending", receipts_pending),
        Route("/_sandbox/counts", counts),
        Route("/_sandbox/reset", reset, methods=["POST"]),
        Route("/_sandbox/faults", faults, methods=["GET", "POST"]),
        Route("/_sandbox/webhooks", webhooks, methods=["GET", "POST"]),
        Route("/_sandbox/info", show_info),
    ]
