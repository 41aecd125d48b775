"""``outbox api``: the HTTP API over Outbox's Python API, with hashed, scoped keys (docs/api.md).

app.py     the endpoints (FastAPI; the OpenAPI document at /openapi.json)
auth.py    the key of a request, its scope and its rate limit
guard.py   the body size limit and the one log line per request
keys.py    keys: their form, hash and scopes; `outbox api-keys create|list|revoke`
models.py  request and response bodies
server.py  serving it with hypercorn
"""

from outbox.apiserver.app import create_app
from outbox.apiserver.server import ApiServer, ApiThread

__all__ = ["ApiServer", "ApiThread", "create_app"]
