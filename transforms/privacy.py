"""Finding a data subject's records: by their identifying values, or by keyed hashes of them.

The forget list holds subjects as keyed hashes (HMAC-SHA256 under a secret salt), never the
raw values; ingest and replay hash each record's subject values the same way and flag the
records whose hash is listed. The erasure job, which is handed the raw values, matches them
directly. Values are compared as text (an int field matches the subject ``"42"``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import operator
from collections.abc import Callable, Sequence

import pandas as pd  # type: ignore[import-untyped]
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.functions import pandas_udf
from pyspark.sql.types import StringType

# the forget list's column of subject hashes
SUBJECT_HASH = "subject_hash"


def subject_hash(salt: bytes, value: str) -> str:
    """The keyed hash of one subject value (hex HMAC-SHA256 of its UTF-8 text)."""
    return hmac.new(salt, value.encode(), hashlib.sha256).hexdigest()


def keyed_hash(*, salt: bytes) -> Callable[[Column], Column]:
    """Returns a function hashing a text column as ``subject_hash`` does (null stays null).

    A vectorized Python UDF holding the salt: as a SQL literal it would be printed in query
    plans (the Spark UI, event logs); inside the function it is not.
    """

    @pandas_udf(StringType())  # type: ignore[call-overload,untyped-decorator]
    def _hash(values: pd.Series) -> pd.Series:
        return values.map(lambda v: None if v is None else subject_hash(salt, v))

    def apply(column: Column) -> Column:
        hashed: Column = _hash(column)
        return hashed

    return apply


def subject_values(*, fields: Sequence[str], key_column: str | None) -> list[Column]:
    """A record's values that identify a subject: the subject fields and, if it carries the
    subject, the Kafka key, all as text."""
    columns = [F.col(f"`{name}`").cast("string") for name in fields]
    if key_column is not None:
        columns.append(F.col(key_column).cast("string"))
    return columns


def flag_matches(
    *, expressions: Sequence[Column], values: DataFrame, flag: str
) -> Callable[[DataFrame], DataFrame]:
    """Returns a transform adding a boolean column: whether any expression equals a value.

    Args:
        expressions: Per row, the values to look up (null never matches).
        values: One column of values to find (small: broadcast, one join per expression).
        flag: The name of the boolean column added.
    """
    (value,) = values.columns

    def transform(df: DataFrame) -> DataFrame:
        out = df
        hits = []
        for number, expression in enumerate(expressions):
            probe, hit = f"_etl_probe_{number}", f"_etl_hit_{number}"
            found = values.select(F.col(value).alias(probe)).distinct().withColumn(hit, F.lit(True))
            out = out.withColumn(probe, expression).join(F.broadcast(found), probe, "left")
            hits.append(hit)
        matched = functools.reduce(
            operator.or_, [F.coalesce(F.col(h), F.lit(False)) for h in hits], F.lit(False)
        )
        probes = [f"_etl_probe_{n}" for n in range(len(expressions))]
        return out.withColumn(flag, matched).drop(*probes, *hits)

    return transform


def mark_forgotten(
    *,
    fields: Sequence[str],
    key_column: str | None,
    forgotten: DataFrame | None,
    hash_value: Callable[[Column], Column],
    flag: str,
) -> Callable[[DataFrame], DataFrame]:
    """Returns a transform flagging the records of forgotten subjects.

    Args:
        fields: The subject fields (decoded columns).
        key_column: The Kafka key column when the key carries the subject, else None.
        forgotten: The forget list's hashes (one column), or None when nobody is forgotten.
        hash_value: The keyed hash (``keyed_hash``) the forget list was made with.
        flag: The name of the boolean column added (false for every row without a list).
    """

    def transform(df: DataFrame) -> DataFrame:
        if forgotten is None:
            return df.withColumn(flag, F.lit(False))
        hashed = [hash_value(c) for c in subject_values(fields=fields, key_column=key_column)]
        return df.transform(flag_matches(expressions=hashed, values=forgotten, flag=flag))

    return transform
