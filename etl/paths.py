"""Locations as Spark and the table formats want them."""

from __future__ import annotations

from pathlib import Path


def local_uri(location: str) -> str:
    """Turns a scheme-less (local, maybe relative) path into an absolute file URI."""
    if "://" in location or location.startswith("file:"):
        return location
    return Path(location).resolve().as_uri()
