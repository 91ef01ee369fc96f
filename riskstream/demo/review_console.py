"""`riskstream demo --review`: after the demo, the review console on the demo's alerts.

Starts its own broker (Tansu) and PostgreSQL (embedded, or `$RISKSTREAM_DATABASE_URL`), puts the
demo's alerts on an `alerts` topic (and its shadow's on `alerts.shadow`, with `riskstream shadow
report`'s table printed), and runs the review service on them until Ctrl-C: the alerts go
through the same consumer as in production, and the console's Precision page shows the shadow
beside the live model. A `demo` user with a fresh random password is
written (hashed) to `<out>/review-users`; the URL and the sign-in are printed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from riskstream.localstack import PostgresService, TansuBroker, create_topics, find_free_port
from riskstream.review.auth import set_user
from riskstream.review.service import ReviewService
from riskstream.review.settings import DEFAULT_PORT, ReviewSettings

__all__ = ["serve_demo_console"]

_out = Console(highlight=False)


def _publish(bootstrap: str, topic: str, alerts: list[dict[str, Any]]) -> None:
    from kafka import KafkaProducer

    from stream.kafka_clients import kafka_config, plaintext

    # The demo's own embedded broker: plaintext, whatever RISKSTREAM_SECURITY_PROTOCOL says.
    producer = KafkaProducer(**kafka_config(bootstrap, plaintext(), acks="all", linger_ms=5))
    try:
        for alert in alerts:
            producer.send(topic, key=str(alert["user_id"]).encode(), value=orjson.dumps(alert))
        producer.flush()
    finally:
        producer.close()


def serve_demo_console(
    out: Path,
    alerts: list[dict[str, Any]],
    port: int | None = None,
    *,
    shadow_alerts: list[dict[str, Any]] | None = None,
) -> None:
    """Serve the console on `alerts` (and the shadow's `shadow_alerts`, when the run had a
    shadow) until Ctrl-C (SIGINT or SIGTERM); stops what it started."""
    if shadow_alerts is not None:
        from riskstream.demo.run import shadow_summary

        _out.rule("[bold]the demo's shadow beside its live model (riskstream shadow report)")
        shadow_summary(_out, alerts, shadow_alerts)
    _out.rule("[bold]review console on the demo's alerts")
    users = out / "review-users"
    password = secrets.token_urlsafe(12)
    set_user(users, "demo", password)
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(TansuBroker(log_path=out / "review-tansu.log"))
        database = stack.enter_context(PostgresService())
        topics = {"alerts": 4, "alerts.shadow": 4, "decisions": 4, "alerts.dlq": 1}
        create_topics(broker.bootstrap, topics)
        _publish(broker.bootstrap, "alerts", alerts)
        if shadow_alerts:
            _publish(broker.bootstrap, "alerts.shadow", shadow_alerts)
        chosen = port or DEFAULT_PORT
        try:
            from riskstream.dev.processes import pick_port

            chosen = pick_port(chosen)
        except Exception:  # no free port near the default: any free one
            chosen = find_free_port()
        settings = ReviewSettings(
            database_url=database.url,
            bootstrap=broker.bootstrap,
            port=chosen,
            users_file=users,
            group="riskstream-review-demo",
        )
        service = ReviewService(settings)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, service.stop)
            task = asyncio.create_task(service.run())
            started = asyncio.create_task(service.started.wait())
            await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
            if service.started.is_set():
                _out.print(
                    f"[bold]review console: http://127.0.0.1:{settings.port}/[/bold]  "
                    f"sign in as [bold]demo[/bold] / [bold]{password}[/bold]  "
                    f"({len(alerts)} alerts; Ctrl-C stops it)"
                )
                if shadow_alerts is not None:
                    _out.print(
                        f"the shadow's {len(shadow_alerts)} would-be alerts are beside the live "
                        f"ones on http://127.0.0.1:{settings.port}/precision (its precision "
                        "shows as you decide the cases they share)"
                    )
                _out.print(
                    f"decisions go to the topic `decisions` on {broker.bootstrap}; "
                    "`riskstream labels export --from-topic --broker "
                    f"{broker.url} --out feedback.jsonl` turns them into labels"
                )
            started.cancel()
            await task

        asyncio.run(main())
    _out.print("review console stopped")
