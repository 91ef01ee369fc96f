"""Tools around a running worker: replay an event file into Kafka, read the alerts it raises."""

from __future__ import annotations

from riskstream.tools.alerts import AlertReader, read_alerts
from riskstream.tools.common import bootstrap_servers, resolve_bootstrap
from riskstream.tools.exceptions import ToolError
from riskstream.tools.replay import ReplaySummary, TokenBucket, replay_file

__all__ = [
    "AlertReader",
    "ReplaySummary",
    "TokenBucket",
    "ToolError",
    "bootstrap_servers",
    "read_alerts",
    "replay_file",
    "resolve_bootstrap",
]
