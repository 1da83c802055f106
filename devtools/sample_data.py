"""Deterministic order events matching schemas/orders.avsc (demo, tests, benchmarks)."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

_STATUSES = ("CREATED", "PAID", "SHIPPED", "CANCELLED")
_CITIES = (("Berlin", "DE"), ("Lyon", "FR"), ("Leeds", "GB"), ("Porto", "PT"), ("Graz", "AT"))
_EPOCH = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def orders(count: int, *, seed: int = 7, start: int = 0) -> list[dict[str, Any]]:
    """Returns ``count`` order records with ids ``o-{start}`` .. ``o-{start+count-1}``."""
    rng = random.Random(seed * 1_000_003 + start)
    records = []
    for n in range(start, start + count):
        quantity = rng.randint(1, 9)
        unit_price = round(rng.uniform(1, 500), 2)
        ordered = _EPOCH + dt.timedelta(seconds=rng.randint(0, 20 * 86400), milliseconds=n % 1000)
        city, country = rng.choice(_CITIES)
        records.append(
            {
                "order_id": f"o-{n}",
                "customer_id": rng.randint(1, 50_000),
                "customer_email": f"c{n % 977}@example.com" if n % 5 else None,
                "status": rng.choice(_STATUSES),
                "quantity": quantity,
                "unit_price": unit_price,
                "amount": (Decimal(str(unit_price)) * quantity).quantize(Decimal("0.01")),
                "currency": "EUR",
                "order_ts": ordered,
                "updated_ts": ordered + dt.timedelta(microseconds=rng.randint(1, 10**9))
                if n % 3
                else None,
                "order_date": ordered.date(),
                "tags": [f"t{rng.randint(0, 9)}" for _ in range(n % 4)],
                "attributes": {"channel": rng.choice(("web", "app", "store")), "n": str(n)},
                "shipping_address": {
                    "street": f"{n % 200} Main St",
                    "city": city,
                    "postcode": f"{10000 + n % 89999}" if n % 7 else None,
                    "country": country,
                }
                if n % 4
                else None,
                "discount": round(rng.random(), 3) if n % 2 else None,
                "is_gift": n % 11 == 0,
            }
        )
    return records
