"""The private Faust, mode and aiokafka APIs that `stream/` relies on are still there.

faust-streaming is pinned to the minor version they were written against (pyproject.toml); an
upgrade that renames or drops any of them fails here, loudly, instead of in a running worker.
"""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_faust_is_the_pinned_minor_version() -> None:
    text = ROOT.joinpath("pyproject.toml").read_text()
    pin = re.search(r'"faust-streaming>=(\d+)\.(\d+),<(\d+)\.(\d+)"', text)
    assert pin, "faust-streaming must be pinned to one minor version (>=0.X,<0.X+1)"
    low, high = (int(pin[1]), int(pin[2])), (int(pin[3]), int(pin[4]))
    assert high == (low[0], low[1] + 1)
    installed = tuple(int(x) for x in version("faust-streaming").split(".")[:2])
    assert installed == low, f"faust-streaming {version('faust-streaming')} is not {low}"


def test_stream_batching_hooks_exist() -> None:
    """stream/batching.py: the hooks `Stream.take_events` uses."""
    from faust.streams import Stream

    for name in ("add_processor", "_enable_passive", "wait", "ack", "wait_for_stopped"):
        assert callable(getattr(Stream, name, None)), f"faust Stream.{name} is gone"
    source = inspect.getsource(Stream.__init__)
    for attr in ("self.enable_acks", "self._processors"):
        assert attr in source, f"faust Stream no longer sets {attr}"
    assert "current_event" in dir(Stream)
    assert "should_stop" in dir(Stream)
    assert "channel" in inspect.getsource(Stream)


def test_transport_overrides_exist() -> None:
    """stream/transport.py: the consumer thread's worker consumer, the consumer's flow and
    its `wait_first`, and the aiokafka attribute that holds the fetch wait."""
    from aiokafka import AIOKafkaConsumer
    from faust.transport.drivers import aiokafka as driver
    from mode.services import WaitResults

    assert callable(driver.AIOKafkaConsumerThread._create_worker_consumer)
    assert callable(driver.Consumer._new_consumer_thread)
    assert callable(driver.Consumer.wait_first)
    from faust.transport.consumer import Consumer

    assert "self.suspend_flow = Event()" in inspect.getsource(Consumer.__init__)
    assert "wait_first(" in inspect.getsource(Consumer._drain_messages)
    assert WaitResults._fields == ("done", "results", "stopped")
    assert driver.Transport.Consumer is not None
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in inspect.getsource(
        AIOKafkaConsumer.__init__
    )
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)


def test_app_and_consumer_hooks_exist() -> None:
    """stream/app.py builds the runtime in `App.on_first_start` (awaited before the consumer
    and agents start); stream/watch.py reads `Consumer._committed_offset`."""
    from faust import App
    from faust.transport.consumer import Consumer
    from mode.services import Service

    assert "await self.on_first_start()" in inspect.getsource(Service._actually_start)
    start = inspect.getsource(Service._actually_start)
    assert start.index("on_first_start") < start.index("child.maybe_start()")
    assert callable(App.on_first_start)
    assert "self._committed_offset" in inspect.getsource(Consumer.__init__)
    for name in ("assignment", "highwaters", "commit"):
        assert callable(getattr(Consumer, name, None)), f"faust Consumer.{name} is gone"


@pytest.mark.parametrize("name", ["timer", "agent", "topic"])
def test_app_decorators_exist(name: str) -> None:
    from faust import App

    assert callable(getattr(App, name))


def test_leave_group_and_stall_hooks_exist() -> None:
    """stream/app.py leaves the group itself (the app's `_consumer`, its `_thread`, that
    thread's aiokafka `_consumer`, `call_thread`) and pauses partitions for the test-only
    stall; stream/transport.py patches aiokafka's `_maybe_leave_group`, which must still test
    `generation > 0` (the patch is moot once it does not)."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator
    from faust import App
    from faust.transport.consumer import Consumer, ThreadDelegateConsumer
    from faust.transport.drivers import aiokafka as driver

    assert "if self._consumer is not None:" in inspect.getsource(App._stop_consumer)
    assert "self._thread = self._new_consumer_thread()" in inspect.getsource(ThreadDelegateConsumer)
    assert "self._consumer = self._create_consumer(" in inspect.getsource(
        driver.AIOKafkaConsumerThread
    )
    assert callable(driver.AIOKafkaConsumerThread.call_thread)
    assert callable(driver.AIOKafkaConsumerThread._ensure_consumer)
    assert callable(Consumer.pause_partitions)
    # Another test may have imported stream/transport.py, which patches the method in place.
    leave = GroupCoordinator._maybe_leave_group
    source = inspect.getsource(getattr(leave, "riskstream_original", leave))
    assert "self.generation > 0 and self._group_instance_id is None" in source
    for name in ("_send_req", "reset_generation"):
        assert callable(getattr(GroupCoordinator, name, None)), f"aiokafka {name} is gone"


def test_catch_up_fetch_wait_hooks_exist() -> None:
    """stream/transport.py's `catch_up_fetch_wait`: aiokafka's fetcher builds its requests in
    `_get_actions_per_node`, whose first item lists (node, FetchRequest) pairs; the request keeps
    its wait in `_max_wait_ms` and its (topic, [(partition, offset, max_bytes)]) in `topics`;
    a partition's state carries the last high watermark."""
    from aiokafka.consumer import fetcher
    from aiokafka.consumer.subscription_state import TopicPartitionState
    from aiokafka.protocol.fetch import FetchRequest

    # A worker built in this process may have patched it in place: read aiokafka's own.
    build = fetcher.Fetcher._get_actions_per_node
    source = inspect.getsource(getattr(build, "riskstream_original", build))
    assert "fetch_requests.append((node_id, req))" in source
    assert "fetch_requests," in source
    request = FetchRequest(20, 1, 1024, 0, [("t", [(0, 5, 1024)])])
    assert request._max_wait_ms == 20
    assert request.topics == [("t", [(0, 5, 1024)])]
    assert "self.highwater" in inspect.getsource(TopicPartitionState)
    assert "TopicPartition" in vars(fetcher)
