"""Delivery receipts: the ``outbox webhooks`` service (see docs/webhooks.md).

Providers tell us what became of a message after they accepted it. This
package receives those webhooks, checks they are genuine, and moves
deliveries forward (sent -> delivered, sent -> dead), suppresses dead
addresses and records opt-outs. Modules:

- ``base``      the seam: Inbound request -> Receipt values, or Rejected
- ``twilio``, ``sendgrid``, ``vonage``, ``mailchimp``  one per provider:
                verify the signature, then read the events
- ``store``     the database calls (named queries in sql/queries/receipts.sql)
- ``late_receipts``  receipts that arrived before the worker recorded the send
- ``metrics``   Prometheus counters (bounded labels)
- ``config``    WebhookConfig, built once from Settings
- ``health``    ``/healthz``'s schema check (outbox.migrate.check, cached briefly)
- ``app``       the Starlette app; ``server`` serves it with hypercorn
"""

from outbox.webhooks.app import create_app
from outbox.webhooks.base import Action, Receipt, Rejected
from outbox.webhooks.config import WebhookConfig, WebhookConfigError
from outbox.webhooks.server import WebhookServer, WebhookThread

__all__ = [
    "Action",
    "Receipt",
    "Rejected",
    "WebhookConfig",
    "WebhookConfigError",
    "WebhookServer",
    "WebhookThread",
    "create_app",
]
