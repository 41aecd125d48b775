"""The provider sandbox: a real local server speaking the provider APIs Outbox uses.

Tests, the demo and the benchmarks send to it instead of Apple, Google,
Twilio, Vonage, SendGrid and Mailchimp; the real SDKs talk to it over real
sockets. One module per provider API (``apns``, ``fcm``, ``twilio``,
``vonage``, ``sendgrid``, ``mailchimp``), plus:

- ``faults``      which answer each request gets (errors, 429, latency, timeouts, dead lists)
- ``recorder``    what was received and answered, queryable at ``/_sandbox/requests``
- ``receipts``    signed Twilio status callbacks and SendGrid event webhooks sent back
- ``credentials`` local CA, keys and fake accounts, kept in a state directory
- ``control``     the ``/_sandbox/*`` API; ``client`` a Python client for it
- ``route_context`` what every provider module's routes are given (SandboxContext)
  and the one way they record and answer a request
- ``app``/``server`` the ASGI apps and hypercorn: plain HTTP for everything but
  APNs, TLS + HTTP/2 for APNs; loopback only

Run it with ``outbox sandbox`` or, in-process, ``with Sandbox(state_dir) as sandbox:``.
"""

from outbox.sandbox.client import SandboxClient
from outbox.sandbox.credentials import SandboxCredentials, make_apns_key
from outbox.sandbox.faults import FaultConfigError
from outbox.sandbox.server import Sandbox, SandboxError, SandboxServer

__all__ = [
    "FaultConfigError",
    "Sandbox",
    "SandboxClient",
    "SandboxCredentials",
    "SandboxError",
    "SandboxServer",
    "make_apns_key",
]
