"""A start/stop service usable as a context manager (broker, registry server, proxies)."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class Service(abc.ABC):
    """Something started and stopped by the caller; ``with`` stops it even on failure."""

    @abc.abstractmethod
    def start(self) -> None:
        """Starts the service."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stops the service."""

    def __enter__(self) -> Self:
        """Starts the service."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stops the service."""
        self.stop()
