"""Render cost of ordinary templates: µs per ``outbox.templates.render`` call, no database.

Three templates a notification system sends every day, rendered ``--renders``
times each (compiled once, as the worker's cache does); CPU time, best of
``--repeats`` rounds:

* **sms**: plain substitution (``{{ name }}``, ``{{ order.id }}``): the fast path
  that does not run Jinja2 (outbox/substitution.py);
* **email**: subject, text and HTML body with ``if``, a ``for`` over the order's
  items, filters (``upper``, ``round``, ``format``, ``join``, ``default``), ``~``
  and ``+``: the Jinja2 path, in the sandbox with its limits;
* **push**: title and body with a condition and a filter.

Run it before and after a change to the sandbox; the sandbox's limits must not
make ordinary templates noticeably slower (docs/templates.md, Limits).

    python -m benchmarks.render [--renders 10000] [--repeats 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/render.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from outbox.templates import TemplateVersion, content_hash, render  # noqa: E402

EMAIL_TEXT = (
    "Hello {{ customer.first_name }},\n\n"
    "{% if order.gift %}Your gift order{% else %}Your order{% endif %} {{ order.id }}"
    " is confirmed.\n"
    "{% for item in order.lines %}- {{ item.qty }} x {{ item.name|upper }}:"
    ' {{ "%.2f"|format(item.price) }} EUR\n{% endfor %}\n'
    "Total: {{ (order.total + order.shipping)|round(2) }} EUR ({{ order.lines|length }} items)\n"
    'Ships to: {{ [order.address.city, order.address.country]|join(", ") }}\n'
    '{{ "Tracking: " ~ order.tracking if order.tracking else "We will email the tracking'
    ' number." }}\n'
    '{{ footer|default("Thanks for shopping with us.") }}\n'
)

EMAIL_HTML = """<h1>Hello {{ customer.first_name }}</h1>
<table>{% for item in order.lines %}<tr><td>{{ item.qty }}</td><td>{{ item.name }}</td>
<td>{{ "%.2f"|format(item.price) }}</td></tr>{% endfor %}</table>
<p>Total: <b>{{ (order.total + order.shipping)|round(2) }} EUR</b></p>"""

TEMPLATES: dict[str, dict[str, str | None]] = {
    "sms": {"body": "Hi {{ customer.first_name }}, order {{ order.id }} ships {{ order.eta }}."},
    "email": {
        "subject": "Order {{ order.id }} confirmed{% if order.gift %} (gift){% endif %}",
        "body": EMAIL_TEXT,
        "html_body": EMAIL_HTML,
    },
    "push": {
        "title": "{{ customer.first_name }}, your order is on its way",
        "body": "{% if order.eta %}Arrives {{ order.eta }}{% else %}Shipped{% endif %}: "
        "{{ order.lines|length }} items, {{ order.total|round(2) }} EUR",
    },
}

DATA: dict[str, Any] = {
    "customer": {"first_name": "Zoé", "email": "zoe@example.com"},
    "order": {
        "id": "A-10492",
        "gift": False,
        "eta": "Tuesday",
        "total": 84.5,
        "shipping": 4.9,
        "tracking": "1Z999AA10123456784",
        "address": {"city": "Lyon", "country": "FR"},
        "lines": [
            {"qty": 1, "name": "Kettle", "price": 39.0},
            {"qty": 2, "name": "Mug", "price": 12.75},
            {"qty": 1, "name": "Tea sampler", "price": 20.0},
        ],
    },
}


def _version(index: int, channel: str, fields: dict[str, str | None]) -> TemplateVersion:
    subject, body = fields.get("subject"), fields["body"]
    html_body, title = fields.get("html_body"), fields.get("title")
    assert body is not None
    return TemplateVersion(
        id=-1000 - index,
        key=f"bench_{channel}",
        channel=channel,
        locale="default",
        version=1,
        subject=subject,
        body=body,
        html_body=html_body,
        title=title,
        content_hash=content_hash(subject, body, html_body, title),
    )


def run(args: argparse.Namespace) -> dict[str, float]:
    """µs per render of each template, best of ``args.repeats`` rounds."""
    results = {}
    for index, (channel, fields) in enumerate(TEMPLATES.items()):
        template = _version(index, channel, fields)
        render(template, DATA)  # compile once, outside the timing
        # CPU time of this process, best of several rounds: the least disturbed by
        # other processes on a shared machine.
        best = float("inf")
        for _ in range(args.repeats):
            began = time.process_time()
            for _ in range(args.renders):
                render(template, DATA)
            best = min(best, time.process_time() - began)
        results[channel] = best / args.renders * 1e6
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    for channel, micros in run(args).items():
        print(f"{channel:6} {micros:8.2f} µs/render")


if __name__ == "__main__":
    main()
