"""The embedded local stack: a Kafka broker (PLAINTEXT + SCRAM) and moto, on loopback ports.

Used by the integration tests (in-process, via :class:`LocalStack`) and by developers
(``python -m devtools.devstack up|down|status``, then :func:`load_state` to find it).
"""

from __future__ import annotations

from devtools.devstack.kafka_broker import BrokerPorts, KafkaBroker
from devtools.devstack.moto_server import MotoServer
from devtools.devstack.stack import LocalStack, StackInfo, load_state

__all__ = ["BrokerPorts", "KafkaBroker", "LocalStack", "MotoServer", "StackInfo", "load_state"]
