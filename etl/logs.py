"""Logging set-up shared by the jobs."""

from __future__ import annotations

import logging


def configure(level: str = "INFO") -> None:
    """Routes this project's loggers to stderr in one compact format."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    # py4j logs every gateway round-trip at INFO
    logging.getLogger("py4j").setLevel(logging.WARNING)
