"""The analysts' review service (`riskstream review`): alerts from Kafka become cases in
PostgreSQL, a web console to judge them, decisions published to Kafka and exported as labels
(`riskstream labels export`) for the next training. See docs/review.md."""

from __future__ import annotations

from riskstream.review.exceptions import AuthError, ReviewError

__all__ = ["AuthError", "ReviewError"]
