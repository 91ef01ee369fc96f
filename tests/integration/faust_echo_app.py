"""A one-agent Faust app for the smoke test: copies every record of one topic to another.

Run as a real worker (the test does this in a subprocess)::

    python -m tests.integration.faust_echo_app worker --without-web -l warn

configured by environment variables: `ECHO_BROKER` (``kafka://host:port``), `ECHO_IN_TOPIC`,
`ECHO_OUT_TOPIC`, `ECHO_APP_ID` and `ECHO_DATA_DIR`. Faust is imported only when the app is
built: pytest's doctest collection imports this module in every run, unit runs included.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import faust

__all__ = ["ENV_APP_ID", "ENV_BROKER", "ENV_DATA_DIR", "ENV_IN", "ENV_OUT", "create_app", "main"]

ENV_BROKER = "ECHO_BROKER"
ENV_IN = "ECHO_IN_TOPIC"
ENV_OUT = "ECHO_OUT_TOPIC"
ENV_APP_ID = "ECHO_APP_ID"
ENV_DATA_DIR = "ECHO_DATA_DIR"

PARTITIONS = 4  # the test creates both topics up front with this count


def create_app(env: Mapping[str, str] | None = None) -> faust.App:
    """Build the echo app from `env` (default: `os.environ`); every variable is required."""
    import faust

    env = os.environ if env is None else env
    app = faust.App(
        env[ENV_APP_ID],
        broker=env[ENV_BROKER],
        datadir=env[ENV_DATA_DIR],  # not ./<app id>-data in the repository
        # Short group timeouts: with Faust's defaults the first join of a new consumer
        # group and any rebalance wait tens of seconds.
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=10.0,
        broker_request_timeout=20.0,
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",  # records sent before the group joined count
        # Topics are created by the test with their partition counts (Tansu cannot add
        # partitions later); no leader topic. No web server either, but the worker command
        # needs --without-web too: its --with-web default overrides this setting.
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=False,
        worker_redirect_stdouts=False,
    )
    source = app.topic(
        env[ENV_IN], partitions=PARTITIONS, key_serializer="raw", value_serializer="raw"
    )
    sink = app.topic(
        env[ENV_OUT], partitions=PARTITIONS, key_serializer="raw", value_serializer="raw"
    )

    # concurrency=1: with more, Faust can commit past a record still being processed.
    @app.agent(source, name="echo", concurrency=1)
    async def echo(stream: faust.StreamT[bytes]) -> None:
        async for key, value in stream.items():
            await sink.send(key=key, value=value)

    return app


def main() -> None:
    """Run the Faust command line (e.g. `worker -l warning`) for the app built from the env."""
    create_app().main()


if __name__ == "__main__":
    main()
