"""Expected shapes of the orders schema (schemas/orders.avsc) as Spark and Arrow return them."""

from __future__ import annotations

import datetime as dt
import struct
from typing import Any

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
)
from pyspark.sql.types import TimestampType as Ts

ADDRESS = StructType(
    [
        StructField("street", StringType()),
        StructField("city", StringType()),
        StructField("postcode", StringType()),
        StructField("country", StringType()),
    ]
)
ORDER = StructType(
    [
        StructField("order_id", StringType()),
        StructField("customer_id", LongType()),
        StructField("customer_email", StringType()),
        StructField("status", StringType()),
        StructField("quantity", IntegerType()),
        StructField("unit_price", DoubleType()),
        StructField("amount", DecimalType(12, 2)),
        StructField("currency", StringType()),
        StructField("order_ts", Ts()),
        StructField("updated_ts", Ts()),
        StructField("order_date", DateType()),
        StructField("tags", ArrayType(StringType())),
        StructField("attributes", MapType(StringType(), StringType())),
        StructField("shipping_address", ADDRESS),
        StructField("discount", FloatType()),
        StructField("is_gift", BooleanType()),
    ]
)


def float32(value: float | None) -> float | None:
    """The value an Avro float round-trips to."""
    return None if value is None else struct.unpack("<f", struct.pack("<f", value))[0]


def spark_row(record: dict[str, Any]) -> tuple[Any, ...]:
    """A record as Spark collects it (session time zone UTC): naive UTC timestamps, tuples."""
    out: list[Any] = []
    for name in ORDER.fieldNames():
        value = record[name]
        if isinstance(value, dt.datetime):
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        elif name == "shipping_address" and value is not None:
            value = tuple(value[k] for k in ADDRESS.fieldNames())
        elif name == "discount":
            value = float32(value)
        out.append(value)
    return tuple(out)


def arrow_row(record: dict[str, Any]) -> dict[str, Any]:
    """A record as pyiceberg/pyarrow returns it: aware UTC timestamps, maps as pairs."""
    out = dict(record)
    out["attributes"] = sorted(record["attributes"].items())
    out["discount"] = float32(record["discount"])
    return out
