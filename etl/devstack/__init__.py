"""The embedded local stack: a Kafka broker (PLAINTEXT + SCRAM) and moto, on loopback ports.

Used by the integration tests (in-process, via :class:`LocalStack`) and by developers
(``python -m etl.devstack up|down|status``, then :func:`load_state` to find it).
"""

from __future__ import annotations

from etl.devstack.kafka_broker import BrokerPorts, KafkaBroker
from etl.devstack.moto_server import MotoServer
from etl.devstack.stack import LocalStack, StackInfo, load_state

__all__ = ["BrokerPorts", "KafkaBroker", "LocalStack", "MotoServer", "StackInfo", "load_state"]
