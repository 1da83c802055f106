from __future__ import annotations

import hashlib
import hmac

from chispa import assert_df_equality
from pyspark.sql import SparkSession

from transforms.privacy import (
    flag_matches,
    keyed_hash,
    mark_forgotten,
    subject_hash,
    subject_values,
)

SALT = b"sixteen-bytes-or-more"
ROWS = "email string, customer_id long, _kafka_key binary"
FLAGGED = f"{ROWS}, gone boolean"


def test_subject_hash_is_hmac_sha256_of_the_utf8_value() -> None:
    expected = hmac.new(SALT, "zoë@example.org".encode(), hashlib.sha256).hexdigest()

    assert subject_hash(SALT, "zoë@example.org") == expected
    assert subject_hash(b"another-salt-value", "zoë@example.org") != expected


def test_mark_forgotten_flags_a_listed_field_or_key_and_never_a_null(spark: SparkSession) -> None:
    rows = spark.createDataFrame(
        [
            ("a@x.org", 1, b"k1"),  # listed email
            ("b@x.org", 42, b"k2"),  # listed as a number, compared as text
            (None, 3, b"c@x.org"),  # listed Kafka key
            (None, None, None),
            ("d@x.org", 4, b"k4"),
        ],
        ROWS,
    )
    listed = spark.createDataFrame(
        [(subject_hash(SALT, v),) for v in ("a@x.org", "42", "c@x.org")], "subject_hash string"
    )
    expected = spark.createDataFrame(
        [
            ("a@x.org", 1, b"k1", True),
            ("b@x.org", 42, b"k2", True),
            (None, 3, b"c@x.org", True),
            (None, None, None, False),
            ("d@x.org", 4, b"k4", False),
        ],
        FLAGGED,
    )

    actual = rows.transform(
        mark_forgotten(
            fields=["email", "customer_id"],
            key_column="_kafka_key",
            forgotten=listed,
            hash_value=keyed_hash(salt=SALT),
            flag="gone",
        )
    )

    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_mark_forgotten_without_a_list_flags_nothing_and_ignores_the_key_unless_asked(
    spark: SparkSession,
) -> None:
    rows = spark.createDataFrame([("a@x.org", 1, b"a@x.org")], ROWS)
    listed = spark.createDataFrame([(subject_hash(SALT, "a@x.org"),)], "subject_hash string")
    expected = spark.createDataFrame([("a@x.org", 1, b"a@x.org", False)], FLAGGED)

    nobody = rows.transform(
        mark_forgotten(
            fields=["email"],
            key_column=None,
            forgotten=None,
            hash_value=keyed_hash(salt=SALT),
            flag="gone",
        )
    )
    other_salt = rows.transform(
        mark_forgotten(
            fields=["email"],
            key_column=None,
            forgotten=listed,
            hash_value=keyed_hash(salt=b"a-different-salt!"),
            flag="gone",
        )
    )

    assert_df_equality(nobody, expected, ignore_nullable=True)
    assert_df_equality(other_salt, expected, ignore_nullable=True)


def test_flag_matches_compares_raw_values_as_text(spark: SparkSession) -> None:
    rows = spark.createDataFrame([("a@x.org", 7, None), ("z@x.org", 8, b"a@x.org")], ROWS)
    values = spark.createDataFrame([("a@x.org",), ("8",)], "value string")
    expected = spark.createDataFrame(
        [("a@x.org", 7, None, True), ("z@x.org", 8, b"a@x.org", True)], FLAGGED
    )
    only_email = spark.createDataFrame(
        [("a@x.org", 7, None, True), ("z@x.org", 8, b"a@x.org", False)], FLAGGED
    )

    both = rows.transform(
        flag_matches(
            expressions=subject_values(fields=["email", "customer_id"], key_column=None),
            values=values,
            flag="gone",
        )
    )
    email = rows.transform(
        flag_matches(
            expressions=subject_values(fields=["email"], key_column=None),
            values=values,
            flag="gone",
        )
    )

    assert_df_equality(both, expected, ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(email, only_email, ignore_row_order=True, ignore_nullable=True)
