"""The stream worker: Faust app, Redis windows, micro-batched ONNX scoring, explained alerts.

Never imports torch. `Processor` runs one batch without Kafka; `stream.app` wires it into Faust.
"""

from stream.exceptions import RulesError, StreamError, WindowStoreError
from stream.model import ModelSlot
from stream.processor import DeadLetter, Incoming, Outcome, Processor
from stream.rules import RuleSet, RulesFile, load_rules, parse_rules
from stream.settings import WorkerSettings
from stream.windows import RedisWindowStore

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
