"""The operator console: ``outbox console`` serves web pages over the queue (docs/console.md).

Server-rendered (Jinja2, autoescaped), usable without JavaScript, behind its
own login (operator name + console token, a signed session cookie, CSRF tokens
on every POST). Requeue and purge of dead letters go through :mod:`outbox.dlq`
after a confirmation page, and each writes an event naming the operator.
"""

from outbox.console.app import ConsoleConfig, create_app
from outbox.console.auth import Sessions, new_token
from outbox.console.server import ConsoleServer, ConsoleThread

__all__ = ["ConsoleConfig", "ConsoleServer", "ConsoleThread", "Sessions", "create_app", "new_token"]
