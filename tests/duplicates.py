"""The duplicate bound the crash tests assert, per delivery.

A provider can accept one delivery more than once only through an attempt whose
outcome nobody recorded (its worker died after the request, or the request timed
out), and each such attempt is counted in that delivery's ``in_doubt``. So per
delivery: accepts <= 1 + in_doubt. Checked per delivery, not as a total, so that
one delivery's uncounted duplicate cannot hide behind other deliveries' in-doubt
attempts that turned out to be sent once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def beyond_doubt(conn: Any, accepts: Mapping[int, int]) -> list[str]:
    """Deliveries (by id) accepted more often than 1 + their in-doubt attempts allow, each
    as 'delivery <id>: <n> accepts, in doubt <k>'; empty when the bound holds."""
    in_doubt = dict(
        conn.execute(
            "SELECT id, in_doubt FROM outbox.deliveries WHERE id = ANY (%s)", (list(accepts),)
        ).fetchall()
    )
    return [
        f"delivery {i}: {n} accepts, in doubt {in_doubt.get(i, 0)}"
        for i, n in sorted(accepts.items())
        if n - 1 > in_doubt.get(i, 0)
    ]
