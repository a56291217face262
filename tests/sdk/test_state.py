"""A service's state: JSON values by collection and key, private copies for each reader,
serialized read-decide-write with ``ctx.state.lock``, durable in a SQLite store."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from choreograph.bus import Bus, RetryPolicy
from choreograph.errors import BackendLockedError, ConfigError, ValidationError
from choreograph.events import CloudEvent
from choreograph.sdk import (
    Context,
    MemoryServiceStore,
    Service,
    SqliteServiceStore,
    open_service_store,
)
from choreograph.sdk.state import State

from .support import Probe, drain, make_event, probe, unique, wait_for


class StateProbe:
    """A service with a ``run`` handler that calls a test-given coroutine on ``ctx.state`` and
    a ``dump`` handler that reports a collection as a ``State.Dumped`` event."""

    def __init__(self, bus: Bus, name: str = "keeper") -> None:
        self.bus = bus
        self.topic = unique("state")
        self.out = unique("dumps")
        self.service = Service(name)
        self.errors: list[Exception] = []
        self.step: Any = None
        self._dumps: Probe | None = None

        @self.service.on("State.Changed", topic=self.topic)
        async def run(event: CloudEvent, ctx: Context) -> None:
            try:
                await self.step(ctx)
            except Exception as exc:
                self.errors.append(exc)

        @self.service.on("State.Asked", topic=self.topic, emits={"State.Dumped": self.out})
        async def dump(event: CloudEvent, ctx: Context) -> None:
            ctx.emit("State.Dumped", dict(await ctx.state.items(event.data)))

    async def change(self, step: Any) -> None:
        self.step = step
        await self.bus.publish(self.topic, make_event("State.Changed"))
        await drain(self.bus)

    async def dump(self, collection: str) -> dict[str, Any]:
        if self._dumps is None:
            self._dumps = await probe(self.bus, self.out)
        dumps = self._dumps
        await self.bus.publish(self.topic, make_event("State.Asked", data=collection))
        await drain(self.bus)
        result: dict[str, Any] = dumps.events[-1].data
        return result


async def test_put_get_delete_and_items(bus: Bus) -> None:
    keeper = StateProbe(bus)
    reads: list[Any] = []

    async def write(ctx: Context) -> None:
        ctx.state.put("drones", "d3", None)
        ctx.state.put("drones", "d1", {"battery": 90})
        ctx.state.put("drones", "d2", {"battery": 40})
        ctx.state.put("packages", "p1", [1, "two", 3.5, True])
        ctx.state.delete("drones", "d2")
        ctx.state.delete("drones", "never-there")

    async def read(ctx: Context) -> None:
        reads.append(await ctx.state.get("drones", "d1"))
        reads.append(await ctx.state.get("drones", "d2"))
        reads.append(await ctx.state.get("drones", "d2", "gone"))
        reads.append(await ctx.state.get("nothing", "here", 0))
        reads.append(sorted(await ctx.state.items("drones")))
        reads.append(await ctx.state.items("nothing"))
        reads.append(await ctx.state.keys("drones"))
        reads.append(await ctx.state.keys("nothing"))

    async with keeper.service.run(bus):
        await keeper.change(write)
        await keeper.change(read)
        packages = await keeper.dump("packages")

    assert keeper.errors == []
    assert reads == [
        {"battery": 90},
        None,
        "gone",
        0,
        [("d1", {"battery": 90}), ("d3", None)],
        [],
        ["d1", "d3"],  # sorted, whatever the order of the writes
        [],
    ]
    assert packages == {"p1": [1, "two", 3.5, True]}


async def test_a_value_read_is_a_copy(bus: Bus) -> None:
    keeper = StateProbe(bus)

    async def mutate(ctx: Context) -> None:
        value = {"tags": ["a"]}
        ctx.state.put("things", "t", value)
        value["tags"].append("changed after put")
        read = await ctx.state.get("things", "t")
        read["tags"].append("changed after get")
        for _, item in await ctx.state.items("things"):
            item["tags"].append("changed after items")

    async with keeper.service.run(bus):
        await keeper.change(mutate)
        things = await keeper.dump("things")

    assert keeper.errors == []
    assert things == {"t": {"tags": ["a"]}}


@pytest.mark.parametrize("value", [object(), {"when": asyncio.Event()}, [1, object()]])
async def test_a_value_that_is_not_json_is_refused(bus: Bus, value: object) -> None:
    keeper = StateProbe(bus)

    async def write(ctx: Context) -> None:
        ctx.state.put("things", "t", "before")
        ctx.state.put("things", "t", value)

    async with keeper.service.run(bus):
        await keeper.change(write)
        things = await keeper.dump("things")

    assert len(keeper.errors) == 1
    assert isinstance(keeper.errors[0], ValidationError)
    assert str(keeper.errors[0]).startswith("state things/t must be JSON: ")
    assert things == {"t": "before"}


@pytest.mark.parametrize(
    "value",
    [{1, 2}, {1: "one"}, float("nan"), float("inf"), b"bytes"],
    ids=["set", "int-key", "nan", "inf", "bytes"],
)
async def test_a_value_json_cannot_carry_faithfully_is_refused(bus: Bus, value: object) -> None:
    keeper = StateProbe(bus)

    async def write(ctx: Context) -> None:
        ctx.state.put("things", "t", value)

    async with keeper.service.run(bus):
        await keeper.change(write)

    assert len(keeper.errors) == 1
    assert isinstance(keeper.errors[0], ValidationError)


async def test_the_lock_serializes_a_read_decide_write_across_concurrent_deliveries(
    bus: Bus,
) -> None:
    orders, assignments = unique("orders"), unique("assignments")
    service = Service("scheduler")
    assigned = await probe(bus, assignments)
    first_inside, second_waiting, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
    entered: list[str] = []

    @service.on("Fleet.Seeded", topic=orders)
    async def seed(event: CloudEvent, ctx: Context) -> None:
        for drone in ("d1", "d2"):
            ctx.state.put("drones", drone, "free")

    @service.on(
        "Package.Created",
        topic=orders,
        emits={"Drone.Assigned": assignments},
        max_concurrent_deliveries=2,
    )
    async def assign(event: CloudEvent, ctx: Context) -> None:
        if first_inside.is_set():
            second_waiting.set()  # and, without yielding before, waits for the lock
        async with ctx.state.lock("fleet"):
            entered.append(event.data)
            free = [drone for drone, status in await ctx.state.items("drones") if status == "free"]
            if not first_inside.is_set():
                first_inside.set()
                await release.wait()  # decided; the other delivery runs meanwhile
            ctx.state.put("drones", free[0], event.data)
        ctx.emit("Drone.Assigned", {"package": event.data, "drone": free[0]})

    async with service.run(bus):
        await bus.publish(orders, make_event("Fleet.Seeded"))
        await drain(bus)
        await bus.publish(orders, make_event("Package.Created", data="p1"))
        await bus.publish(orders, make_event("Package.Created", data="p2"))
        await wait_for(first_inside)
        await wait_for(second_waiting)
        assert len(entered) == 1  # the second delivery is running, held at the lock
        release.set()
        await drain(bus)

    drones = sorted(event.data["drone"] for event in assigned.events)
    assert drones == ["d1", "d2"]


async def test_the_state_survives_closing_and_reopening_a_sqlite_store(
    bus: Bus, tmp_path: Path
) -> None:
    store = "sqlite:///" + str(tmp_path / "keeper.db")
    keeper = StateProbe(bus)

    async def write(ctx: Context) -> None:
        ctx.state.put("drones", "d1", {"battery": 90})
        ctx.state.put("drones", "d2", "free")
        ctx.state.put("drones", "d3", "gone soon")

    async def change(ctx: Context) -> None:
        ctx.state.delete("drones", "d3")
        ctx.state.put("drones", "d2", "busy")

    async with keeper.service.run(bus, store=store):
        await keeper.change(write)
    async with keeper.service.run(bus, store=store):
        await keeper.change(change)
    async with keeper.service.run(bus, store=store):
        drones = await keeper.dump("drones")

    assert keeper.errors == []
    assert drones == {"d1": {"battery": 90}, "d2": "busy"}


async def test_a_memory_store_url_starts_empty_each_run(bus: Bus) -> None:
    keeper = StateProbe(bus)

    async def write(ctx: Context) -> None:
        ctx.state.put("drones", "d1", "free")

    async with keeper.service.run(bus, store="memory://"):
        await keeper.change(write)
    async with keeper.service.run(bus, store="memory://"):
        drones = await keeper.dump("drones")

    assert drones == {}


async def test_a_second_store_object_on_the_same_sqlite_file_is_refused(
    bus: Bus, tmp_path: Path
) -> None:
    path = tmp_path / "keeper.db"
    keeper = StateProbe(bus)

    async with keeper.service.run(bus, store="sqlite:///" + str(path)):
        second = SqliteServiceStore(path)
        with pytest.raises(BackendLockedError, match="in use by another service store process"):
            await second.open()
        other = StateProbe(bus, name="other")
        with pytest.raises(BackendLockedError):
            async with other.service.run(bus, store="sqlite:///" + str(path)):
                pass

    # Once the first owner closed it, the file can be opened again.
    async with keeper.service.run(bus, store="sqlite:///" + str(path)):
        pass


async def test_a_second_process_on_the_same_sqlite_file_is_refused(
    bus: Bus, tmp_path: Path
) -> None:
    path = tmp_path / "keeper.db"
    script = (
        "import asyncio, sys\n"
        "from choreograph.errors import BackendLockedError\n"
        "from choreograph.sdk import SqliteServiceStore\n"
        "async def main():\n"
        "    try:\n"
        "        await SqliteServiceStore(sys.argv[1]).open()\n"
        "    except BackendLockedError as exc:\n"
        "        print(type(exc).__name__, exc)\n"
        "        return 3\n"
        "    return 0\n"
        "sys.exit(asyncio.run(main()))\n"
    )
    keeper = StateProbe(bus)

    async with keeper.service.run(bus, store="sqlite:///" + str(path)):
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            str(path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            out, err = await child.communicate()

    assert child.returncode == 3, err.decode()
    assert out.decode().startswith("BackendLockedError ")


async def test_a_sqlite_store_that_is_not_open_says_so(tmp_path: Path) -> None:
    store = SqliteServiceStore(tmp_path / "closed.db")
    with pytest.raises(ConfigError, match=r"service store .*closed\.db is not open"):
        await store.handled("handler", "event")


# ------------------------------------------------- concurrent handlers and the durable state


def counter_service(
    orders: str, done: str, release: asyncio.Event, decided: asyncio.Event
) -> Service:
    """``Count.Up`` increments a counter under a lock; the ``slow`` one then waits for
    ``release`` (and fails if its data says so) before returning, the others return at once
    and emit ``Count.Done``."""
    service = Service("counter")

    @service.on("Count.Up", topic=orders, emits={"Count.Done": done}, max_concurrent_deliveries=2)
    async def count_up(event: CloudEvent, ctx: Context) -> None:
        async with ctx.state.lock("counter"):
            count = await ctx.state.get("stats", "count", 0)
            ctx.state.put("stats", "count", count + 1)
        if event.data in ("slow", "slow-failing"):
            decided.set()
            await release.wait()  # an outside call, say, after the decision
            if event.data == "slow-failing":
                raise RuntimeError("the outside call failed")
        ctx.emit("Count.Done")

    @service.on("Count.Asked", topic=orders, emits={"Count.Told": done})
    async def tell(event: CloudEvent, ctx: Context) -> None:
        ctx.emit("Count.Told", dict(await ctx.state.items("stats")))

    return service


async def interleave(bus: Bus, slow: str, store: str) -> dict[str, Any]:
    """Run a slow and a fast ``Count.Up`` side by side, the fast one finishing first; return
    the counter as the running service saw it and as the store has it after a restart."""
    orders, done = unique("orders"), unique("done")
    release, decided, fast_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    service = counter_service(orders, done, release, decided)
    service.retry_policy = RetryPolicy(max_delivery_attempts=1)
    told: list[Any] = []

    async def watch(event: CloudEvent) -> None:
        if event.type == "Count.Done":
            fast_done.set()  # emitted events are published after the handler's commit
        else:
            told.append(event.data)

    await bus.put_topic(done)
    await bus.subscribe(done, "watch", watch)

    async with service.run(bus, store=store):
        await bus.publish(orders, make_event("Count.Up", data=slow))
        await wait_for(decided)
        await bus.publish(orders, make_event("Count.Up", data="fast"))
        await wait_for(fast_done)
        release.set()
        await drain(bus)
        await bus.publish(orders, make_event("Count.Asked"))
        await drain(bus)
    async with service.run(bus, store=store):
        await bus.publish(orders, make_event("Count.Asked"))
        await drain(bus)
    return {"running": told[0], "reopened": told[1]}


async def test_a_lock_protected_counter_counts_every_delivery_in_memory(bus: Bus) -> None:
    assert await interleave(bus, "slow", "memory://") == {
        "running": {"count": 2},
        "reopened": {},
    }


async def test_a_lock_protected_counter_is_durable_whatever_order_the_handlers_commit_in(
    bus: Bus, tmp_path: Path
) -> None:
    store = "sqlite:///" + str(tmp_path / "counter.db")
    assert await interleave(bus, "slow", store) == {
        "running": {"count": 2},
        "reopened": {"count": 2},
    }


async def test_a_failed_handler_does_not_undo_what_another_handler_committed_since(
    bus: Bus, tmp_path: Path
) -> None:
    store = "sqlite:///" + str(tmp_path / "counter.db")
    seen = await interleave(bus, "slow-failing", store)
    assert seen["running"] == seen["reopened"]


@pytest.mark.parametrize(
    "url", ["", "sqlite:///", "sqlite://relative.db", "postgres://db", "memory"]
)
def test_a_bad_service_store_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="a service store URL is memory:// or sqlite:///path"):
        open_service_store(url)


def test_service_store_urls_name_the_store(tmp_path: Path) -> None:
    assert isinstance(open_service_store("memory://"), MemoryServiceStore)
    store = open_service_store("sqlite:///" + str(tmp_path / "abs.db"))
    assert isinstance(store, SqliteServiceStore)
    assert store.path == tmp_path / "abs.db"
    relative = open_service_store("sqlite:///relative/service.db")
    assert isinstance(relative, SqliteServiceStore)
    assert relative.path == Path("relative/service.db")


async def test_a_taken_lock_is_shared_until_its_last_user_drops_it() -> None:
    state = State()
    first = state.take_lock("join:t-1")
    await first.acquire()
    second = state.take_lock("join:t-1")
    waiting = asyncio.create_task(second.acquire())
    await asyncio.sleep(0)  # the second user is now queued on the lock
    first.release()
    state.drop_lock("join:t-1")  # the first is done; the second has not run yet
    third = state.take_lock("join:t-1")
    assert third is first  # not a fresh lock that would let a third user in beside the second
    await waiting
    assert third.locked()
    third_acquiring = asyncio.create_task(third.acquire())
    second.release()
    state.drop_lock("join:t-1")
    await third_acquiring
    third.release()
    state.drop_lock("join:t-1")
    assert state.take_lock("join:t-1") is not first  # forgotten once nobody used it
