"""Which commits of a table's history the exactly-once replay check still reads.

A restarted query asks its table for the highest batch id it committed (the newest commit
carrying its query id, or carrying its batch id forward) and for the reader schema it decoded
with (the newest commit carrying one). Expiring those commits would make a replayed batch look
new (a duplicate) or lose the evolved schema, so maintenance keeps every commit from the
oldest of them on.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

# the columns of ``needed_commits``' result
NEEDED_FOR = "needed_for"
COMMITTED_AT = "committed_at"


def needed_commits(
    *, query_key: str, schema_key: str, carried_prefix: str, properties: str = "properties"
) -> Callable[[DataFrame], DataFrame]:
    """Selects the commits the replay check reads, from a commit history.

    Args:
        query_key: The commit property holding the streaming query's id.
        schema_key: The commit property holding the reader schema.
        carried_prefix: Keys ``<prefix><query id>`` carry a query's batch id forward (a
            commit that is no batch of it: the query's newest commit as far as replay goes).
        properties: The history's map column of commit properties.

    Returns:
        A transform of a history (``committed_at`` timestamp, ``properties``
        map<string,string>) into one row per needed commit: ``needed_for`` (``query <id>`` or
        ``reader schema``) and its ``committed_at``.
    """

    def transform(history: DataFrame) -> DataFrame:
        props = F.col(properties)
        own = history.where(props.getItem(query_key).isNotNull()).select(
            props.getItem(query_key).alias("query"), COMMITTED_AT
        )
        carried = (
            history.select(F.explode(F.map_keys(props)).alias("key"), COMMITTED_AT)
            .where(F.col("key").startswith(carried_prefix))
            .select(
                F.expr(f"substring(key, {len(carried_prefix) + 1})").alias("query"), COMMITTED_AT
            )
        )
        by_query = (
            own.unionByName(carried)
            .groupBy("query")
            .agg(F.max(COMMITTED_AT).alias(COMMITTED_AT))
            .select(F.concat(F.lit("query "), "query").alias(NEEDED_FOR), COMMITTED_AT)
        )
        schema = (
            history.where(props.getItem(schema_key).isNotNull())
            .agg(F.max(COMMITTED_AT).alias(COMMITTED_AT))
            .where(F.col(COMMITTED_AT).isNotNull())
            .select(F.lit("reader schema").alias(NEEDED_FOR), COMMITTED_AT)
        )
        return by_query.unionByName(schema)

    return transform
