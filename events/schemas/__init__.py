"""The contracts as JSON Schema (draft 2020-12) files shipped with the package."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Literal

__all__ = ["load_schema"]


def load_schema(name: Literal["event", "label", "alert", "decision"]) -> dict[str, Any]:
    """The parsed JSON Schema of one contract.

    >>> load_schema("event")["required"]
    ['event_id', 'user_id', 'ts', 'type']
    """
    text = resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
