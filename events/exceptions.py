"""Errors of the event contract. `RiskstreamError` is the root of every error riskstream raises."""

from __future__ import annotations

__all__ = [
    "IncompatibleSpec",
    "InvalidAlert",
    "InvalidDecision",
    "InvalidEvent",
    "InvalidLabel",
    "RiskstreamError",
    "UnwritableOutput",
]


class RiskstreamError(Exception):
    """Root of every riskstream error: catch this to catch them all."""


class InvalidEvent(RiskstreamError):  # noqa: N818 - the contract's name for it
    """An event breaks the contract. `field` names the offending field, `rule` the broken rule.

    >>> str(InvalidEvent("price", "must be >= 0"))
    'price: must be >= 0'
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule

    @property
    def reason(self) -> str:
        """The message that goes to the dead-letter topic."""
        return str(self)


class InvalidLabel(RiskstreamError):  # noqa: N818
    """A label line breaks the label contract; the message names the field."""


class IncompatibleSpec(RiskstreamError):  # noqa: N818
    """An encoding spec or window policy saved with a model does not match this code."""


class InvalidAlert(RiskstreamError):  # noqa: N818
    """An alert message breaks the alert contract (alert.json); `field` names where.

    >>> str(InvalidAlert("score", "must be a number in [0, 1]"))
    'score: must be a number in [0, 1]'
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class InvalidDecision(InvalidAlert):
    """A decision message breaks the decision contract (decision.json); `field` names where."""


class UnwritableOutput(RiskstreamError):  # noqa: N818
    """An output path (`--out`) this process cannot write; checked before any work. The CLI
    exits with 2, like a bad argument."""
