"""The stream worker: Faust app, Redis windows, micro-batched ONNX scoring, explained alerts.

Never imports torch. `Processor` runs one batch without Kafka; `stream.app` wires it into Faust.
"""

from stream.dlq import DeadLetter
from stream.exceptions import RulesError, StreamError, WindowStoreError
from stream.messages import Incoming
from stream.model_slot import ModelSlot
from stream.processor import Outcome, Processor
from stream.redis_windows import RedisWindowStore
from stream.rules import RuleSet, RulesFile, load_rules, parse_rules
from stream.settings import WorkerSettings

__all__ = [
    "DeadLetter",
    "Incoming",
    "ModelSlot",
    "Outcome",
    "Processor",
    "RedisWindowStore",
    "RuleSet",
    "RulesError",
    "RulesFile",
    "StreamError",
    "WindowStoreError",
    "WorkerSettings",
    "load_rules",
    "parse_rules",
]
