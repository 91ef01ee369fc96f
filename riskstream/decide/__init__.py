"""The decision service: `allow / review / block` for one event, synchronously, on the same Redis
windows, bundle and rules as the stream worker (docs/decide.md). Never imports torch."""

from riskstream.decide.decider import DECISIONS, DecidePolicy, Decider, decide_client
from riskstream.decide.exceptions import ApiKeyError, DecideError
from riskstream.decide.keys import KeyStore, add_key, hash_key

__all__ = [
    "DECISIONS",
    "ApiKeyError",
    "DecideError",
    "DecidePolicy",
    "Decider",
    "KeyStore",
    "add_key",
    "decide_client",
    "hash_key",
]
