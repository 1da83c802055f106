"""The one place a SparkSession is built: jars, each table format's confs, session defaults."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from etl.config import Settings, TableFormat
from etl.exceptions import ConfigError
from etl.formats import check_one_session, formats_used, table_format
from transforms.decode import INFLATE_ZLIB_CLASS, INFLATE_ZLIB_FUNCTION, INFLATE_ZLIB_RESULT

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def spark_conf(settings: Settings, formats: Iterable[TableFormat] | None = None) -> dict[str, str]:
    """Computes every Spark conf the session needs, without starting anything.

    Args:
        settings: Parsed settings.
        formats: The table formats the session hosts; default: those the pipelines use.

    Returns:
        Conf key -> value; explicit ``spark.conf`` entries from the settings win.

    Raises:
        ConfigError: ``spark.jars_dir`` is set but holds no jars (run ``make jars``), or a
            format's own jar directory beside it is empty, or one session cannot host all
            the formats (``etl.formats.check_one_session``).
    """
    hosted = formats_used(settings) if formats is None else list(formats)
    check_one_session(settings, hosted)
    # Delta's extension goes first: Iceberg 1.10's row-lineage rule fails (scala.MatchError)
    # on an UPDATE of any non-Iceberg table it sees before Delta's own rule has planned it
    # (apache/iceberg#15040); in this order Delta's rule rewrites the UPDATE first
    hosted.sort(key=lambda f: f is not TableFormat.DELTA)
    conf: dict[str, str] = {
        "spark.sql.shuffle.partitions": str(settings.spark.shuffle_partitions),
        "spark.ui.enabled": str(settings.spark.ui_enabled).lower(),
        "spark.sql.session.timeZone": "UTC",
        # a streaming checkpoint is the source of truth for offsets; keep its logs bounded
        "spark.sql.streaming.minBatchesToRetain": "20",
        # each micro-batch's Kafka rows are cached once (schema-id scan + decode) and read
        # back at once: compressing them costs more CPU than it saves (bench: +35% decode)
        "spark.sql.inMemoryColumnarStorage.compressed": "false",
    }
    supports = [table_format(f) for f in hosted]
    if settings.spark.jars_dir is not None:
        jars = sorted(Path(settings.spark.jars_dir).glob("*.jar"))
        if not jars:
            raise ConfigError(
                f"spark.jars_dir: expected the Maven-resolved jars in {settings.spark.jars_dir}, "
                "found none (run `make jars`)"
            )
        # A format's own jars (Hudi's bundle) come after: where both ship a class (Iceberg's
        # CALL arguments) the shared jars' copy wins; and only sessions hosting it get them.
        jars += [jar for s in supports if s.own_jars for jar in _format_jars(settings, s.format)]
        # On the JVM's own classpath, not only spark.jars: JAAS and Kafka load the MSK IAM
        # login module and callback handler by name through loaders that do not see spark.jars,
        # and so does Avro (a JVM classpath jar) for Hudi's generated record classes on
        # threads without Spark's loader (reading a delete block then fails with a cast error).
        classpath = ":".join(str(jar.resolve()) for jar in jars)
        conf["spark.driver.extraClassPath"] = classpath
        conf["spark.executor.extraClassPath"] = classpath
    extensions = [e for support in supports for e in support.extensions]
    if extensions:
        conf["spark.sql.extensions"] = ",".join(extensions)
    for support in supports:
        conf.update(support.session_conf(settings))
    conf.update(settings.spark.conf)
    return conf


def _format_jars(settings: Settings, fmt: TableFormat) -> list[Path]:
    """The jars `make jars` resolved from a format's own pom, in ``.jars/<format>/``."""
    assert settings.spark.jars_dir is not None
    directory = Path(settings.spark.jars_dir).parent / fmt.value
    jars = sorted(jar.resolve() for jar in directory.glob("*.jar"))
    if not jars:
        raise ConfigError(
            f"spark.jars_dir: expected the Maven-resolved {fmt.value} jars in {directory} "
            "(beside it), found none (run `make jars`)"
        )
    return jars


def build_spark(settings: Settings, formats: Iterable[TableFormat] | None = None) -> SparkSession:
    """Builds (or returns the running) SparkSession configured for the settings.

    Args:
        settings: Parsed settings.
        formats: The table formats the session hosts; default: those the pipelines use.

    Returns:
        The session. On EMR / Glue, confs the platform already set are kept unless the
        settings name them explicitly.
    """
    from pyspark.sql import SparkSession

    if settings.spark.master and settings.spark.master.startswith("local"):
        # Python workers must run this interpreter (its venv has pyarrow, fastavro, this
        # package); pyspark otherwise starts whatever `python3` is first on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(settings.spark.app_name)
    if settings.spark.master:
        builder = builder.master(settings.spark.master)
    for key, value in spark_conf(settings, formats).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    register_jvm_functions(session)
    return session


def register_jvm_functions(spark: SparkSession) -> bool:
    """Registers the project's JVM UDFs (``jvm/udf``) if their jar is on the classpath.

    Returns:
        True if registered; False if the jar is missing (zlib bodies are then inflated in
        Python, which works but is slower, see README "Performance").
    """
    try:
        spark.udf.registerJavaFunction(
            INFLATE_ZLIB_FUNCTION, INFLATE_ZLIB_CLASS, INFLATE_ZLIB_RESULT
        )
    except Exception as err:
        if INFLATE_ZLIB_CLASS not in str(err):
            raise
        log.warning(
            "%s is not on the classpath (ship .jars/spark/etl-udf-*.jar with the job): "
            "zlib bodies are inflated in Python",
            INFLATE_ZLIB_CLASS,
        )
        return False
    return True
