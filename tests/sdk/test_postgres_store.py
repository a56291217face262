"""The PostgreSQL service store, shared by the processes of a service: the inbox replays a
redelivered event, a failed run changes nothing, ``ctx.state.lock`` serializes across stores
(here: two store objects, each with its own connections, as two processes would have), and the
state outlives the store.

Each test gets a schema of its own, dropped at the end. Without a server on 127.0.0.1:5432 the
tests are skipped, unless ``CHOREOGRAPH_REQUIRE_SERVICES=1`` (CI), which makes them fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import pytest

from choreograph.bus import Bus
from choreograph.errors import BackendError, ChoreographError, ConfigError
from choreograph.events import CloudEvent
from choreograph.sdk import Context, Service, ServiceEndpoint, open_service_store
from choreograph.sdk.endpoint import event_key
from choreograph.testing.clock import FakeClock
from polling import until

from .support import FAST_RETRIES, NO_DEDUPLICATION, drain, make_event, probe, run_for, unique

if os.environ.get("CHOREOGRAPH_REQUIRE_SERVICES") == "1":
    import asyncpg  # type: ignore[import-untyped]
else:
    asyncpg = pytest.importorskip("asyncpg")

from choreograph.sdk.postgres import PostgresServiceStore, PostgresStoreSettings

SERVER: Final = "postgresql://postgres@127.0.0.1:5432/test"
WAIT_SECONDS: Final = 10.0


@pytest.fixture
async def schema(postgres_server: str) -> AsyncIterator[str]:
    """A schema of the test's own, dropped at the end."""
    name = f"cg_test_{secrets.token_hex(6)}"
    yield name
    connection = await asyncpg.connect(SERVER)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture
def url(schema: str) -> str:
    return f"{SERVER}?schema={schema}"


@pytest.fixture
async def store(url: str) -> AsyncIterator[PostgresServiceStore]:
    opened = PostgresServiceStore(url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def rows(schema: str, query: str, *args: Any) -> list[Any]:
    """What a query on the test's schema returns (``{s}`` stands for the schema)."""
    connection = await asyncpg.connect(SERVER)
    try:
        return list(await connection.fetch(query.format(s=f'"{schema}"'), *args))
    finally:
        await connection.close()


def counting_service(orders: str, shipments: str, calls: list[str]) -> Service:
    service = Service("shipping", retry_policy=FAST_RETRIES)

    @service.on("Order.Placed", topic=orders, emits={"Shipment.Created": shipments})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        calls.append(event.id)
        count = await ctx.state.get("stats", "shipped", 0)
        ctx.state.put("stats", "shipped", count + 1)
        ctx.state.put("orders", event.id, {"order": event.data})
        if event.data == "flaky" and ctx.attempt == 1:
            raise RuntimeError("the warehouse is busy")
        ctx.emit("Shipment.Created", {"order": event.data, "shipped": count + 1})

    return service


# the inbox ---------------------------------------------------------------------------------------
async def test_a_redelivered_event_is_replayed_from_the_inbox(
    bus: Bus, url: str, schema: str
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    await bus.put_topic(orders, NO_DEDUPLICATION)
    await bus.put_topic(shipments, NO_DEDUPLICATION)
    shipped = await probe(bus, shipments)
    calls: list[str] = []
    order = make_event("Order.Placed", data="o-1")

    async with counting_service(orders, shipments, calls).run(bus, store=url) as running:
        await bus.publish(orders, order)
        await drain(bus)
        await bus.publish(orders, order)  # the topic stores it again: a redelivery in effect
        await drain(bus)
        assert await running.store.view().get("stats", "shipped") == 1

    assert calls == [order.id]
    first, again = shipped.events
    assert again.id == first.id
    assert again.data == {"order": "o-1", "shipped": 1}
    [entry] = await rows(schema, "SELECT handler, event_id, handled_by FROM {s}.inbox")
    assert (entry["handler"], entry["event_id"]) == ("ship", event_key(order))
    assert entry["handled_by"] == f"{socket.gethostname()}:{os.getpid()}"


async def test_the_same_event_handled_in_two_processes_at_once_runs_once(
    url: str, schema: str
) -> None:
    """The second run waits at the inbox claim until the first commits, then replays it."""
    calls: list[str] = []
    inside, release = asyncio.Event(), asyncio.Event()
    service = Service("shipping")

    @service.on("Order.Placed", topic="orders", emits={"Shipment.Created": "shipments"})
    async def ship(event: CloudEvent, ctx: Context) -> None:
        calls.append(event.id)
        inside.set()
        await release.wait()
        ctx.state.put("orders", event.id, "shipped")
        ctx.emit("Shipment.Created", {"order": event.id})

    first = PostgresServiceStore(url, handled_by="first")
    second = PostgresServiceStore(url, handled_by="second")
    await first.open()
    await second.open()
    try:
        [spec] = service.handlers
        clock = FakeClock()
        order = make_event("Order.Placed")
        running = asyncio.create_task(ServiceEndpoint(service, spec, first, clock).handle(order, 1))
        async with asyncio.timeout(WAIT_SECONDS):
            await inside.wait()
        copy = asyncio.create_task(ServiceEndpoint(service, spec, second, clock).handle(order, 1))

        async def waiting_at_the_claim() -> bool:
            found = await rows(
                schema,
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND application_name = $1",
                second.application_name,
            )
            return bool(found)

        await until(waiting_at_the_claim, "the second run waits for the first", WAIT_SECONDS)
        release.set()
        async with asyncio.timeout(WAIT_SECONDS):
            emitted, replayed = await asyncio.gather(running, copy)
    finally:
        await first.close()
        await second.close()

    assert calls == [order.id]
    assert [event.id for _, event in replayed] == [event.id for _, event in emitted]
    assert [row[0] for row in await rows(schema, "SELECT handled_by FROM {s}.inbox")] == ["first"]


# atomicity ---------------------------------------------------------------------------------------
async def test_a_failed_run_leaves_neither_state_nor_inbox_entry(
    bus: Bus, clock: FakeClock, url: str, schema: str
) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    shipped = await probe(bus, shipments)
    calls: list[str] = []
    flaky = make_event("Order.Placed", data="flaky")

    async with counting_service(orders, shipments, calls).run(bus, store=url) as running:
        await bus.publish(orders, flaky)
        await drain(bus)
        assert calls == [flaky.id]  # the first attempt failed after writing
        assert await rows(schema, "SELECT 1 FROM {s}.state") == []
        assert await rows(schema, "SELECT 1 FROM {s}.inbox") == []
        assert await running.store.handled("ship", event_key(flaky)) is None

        await run_for(bus, clock, 1.0)  # the retry
        assert calls == [flaky.id, flaky.id]
        assert await running.store.view().get("stats", "shipped") == 1

    assert shipped.only().data == {"order": "flaky", "shipped": 1}


async def test_a_transaction_commits_on_exit_and_rolls_back_when_it_raises(
    store: PostgresServiceStore,
) -> None:
    async with store.transaction() as state:
        state.put("fleet", "drone-1", {"free": True})
        state.put("fleet", "drone-2", {"free": True})
        assert await state.get("fleet", "drone-1") == {"free": True}  # its own write
        assert await store.view().get("fleet", "drone-1") is None  # not committed yet

    seen: list[str] = []

    async def failing_seed() -> None:
        async with store.transaction() as state:
            state.delete("fleet", "drone-1")
            state.put("fleet", "drone-3", {"free": True})
            seen.extend(key for key, _ in await state.items("fleet"))
            seen.extend(await state.keys("fleet"))
            raise RuntimeError("seeding failed")

    with pytest.raises(RuntimeError, match="seeding failed"):
        await failing_seed()
    assert seen == ["drone-2", "drone-3"] * 2  # its own changes, until it failed
    assert await store.view().keys("fleet") == ["drone-1", "drone-2"]

    assert await store.view().items("fleet") == [
        ("drone-1", {"free": True}),
        ("drone-2", {"free": True}),
    ]


# locks ---------------------------------------------------------------------------------------
def scheduler(decided: Callable[[], Awaitable[None]]) -> Service:
    """Assigns the first free drone to each package, under the ``fleet`` lock."""
    service = Service("scheduler")

    @service.on("Package.Created", topic="packages", emits={"Drone.Assigned": "drones"})
    async def assign(event: CloudEvent, ctx: Context) -> None:
        async with ctx.state.lock("fleet"):
            free = [drone for drone, holder in await ctx.state.items("fleet") if holder is None]
            await decided()  # the other process runs meanwhile
            ctx.state.put("fleet", free[0], event.data)
        ctx.emit("Drone.Assigned", {"package": event.data, "drone": free[0]})

    return service


async def test_the_state_lock_serializes_concurrent_assignments_across_stores(
    url: str, schema: str
) -> None:
    packages = 16
    service = scheduler(lambda: asyncio.sleep(0.005))
    [spec] = service.handlers
    clock = FakeClock()
    stores = [PostgresServiceStore(url, handled_by=f"process-{n}") for n in (1, 2)]
    for store in stores:
        await store.open()
    try:
        async with stores[0].transaction() as state:
            for number in range(packages):
                state.put("fleet", f"drone-{number:02d}", None)
        endpoints = [ServiceEndpoint(service, spec, store, clock) for store in stores]
        async with asyncio.timeout(WAIT_SECONDS):
            results = await asyncio.gather(
                *(
                    endpoints[number % 2].handle(
                        make_event("Package.Created", data=f"p-{number}"), 1
                    )
                    for number in range(packages)
                )
            )
        fleet = dict(await stores[1].view().items("fleet"))
    finally:
        for store in stores:
            await store.close()

    assigned = [event.data["drone"] for [(_, event)] in results]
    assert sorted(assigned) == sorted(fleet)  # every drone taken once, none twice
    assert sorted(fleet.values()) == sorted(f"p-{number}" for number in range(packages))
    by_process = await rows(schema, "SELECT handled_by, count(*) FROM {s}.inbox GROUP BY 1")
    assert {row[0]: row[1] for row in by_process} == {"process-1": 8, "process-2": 8}


async def test_the_two_halves_of_a_join_arriving_at_two_stores_at_once_join_once(
    url: str,
) -> None:
    """Each half holds the join's lock through its commit: the second sees the first's part."""
    service = Service("dispatch")
    joined: list[dict[str, Any]] = []

    @service.join(
        {"Package.Ready": "packages", "Drone.Ready": "drones"},
        emits={"Delivery.Started": "deliveries"},
    )
    async def start(events: Any, ctx: Context) -> None:
        joined.append({kind: event.data for kind, event in events.items()})
        ctx.emit("Delivery.Started")

    [spec] = service.handlers
    stores = [PostgresServiceStore(url, handled_by=f"process-{n}") for n in (1, 2)]
    for store in stores:
        await store.open()
    try:
        clock = FakeClock()
        endpoints = [ServiceEndpoint(service, spec, store, clock) for store in stores]
        for number in range(10):
            tx = f"tx-{number}"
            package = make_event("Package.Ready", data="p", correlationid=tx)
            drone = make_event("Drone.Ready", data="d", correlationid=tx)
            async with asyncio.timeout(WAIT_SECONDS):
                halves = await asyncio.gather(
                    endpoints[0].handle(package, 1), endpoints[1].handle(drone, 1)
                )
            assert sorted(len(emitted) for emitted in halves) == [0, 1]
    finally:
        for store in stores:
            await store.close()

    assert joined == [{"Package.Ready": "p", "Drone.Ready": "d"}] * 10


async def test_a_view_outside_a_transaction_takes_no_lock(store: PostgresServiceStore) -> None:
    with pytest.raises(ChoreographError, match=r"not through store\.view"):
        store.view().lock("fleet")


# durability and lifecycle ------------------------------------------------------------------------
async def test_the_state_and_inbox_outlive_the_store(bus: Bus, url: str) -> None:
    orders, shipments = unique("orders"), unique("shipments")
    calls: list[str] = []
    service = counting_service(orders, shipments, calls)
    order = make_event("Order.Placed", data="o-1")
    async with service.run(bus, store=url):
        await bus.publish(orders, order)
        await drain(bus)

    reopened = open_service_store(url)
    assert isinstance(reopened, PostgresServiceStore)
    await reopened.open()
    try:
        assert await reopened.view().get("stats", "shipped") == 1
        assert await reopened.view().get("orders", order.id) == {"order": "o-1"}
        replay = await reopened.handled("ship", event_key(order))
        assert replay is not None
        assert [event.type for _, event in replay] == ["Shipment.Created"]
        assert await reopened.forget_before(1e12) == 1
        assert await reopened.handled("ship", event_key(order)) is None
    finally:
        await reopened.close()


async def test_processes_starting_together_create_the_tables_once(url: str) -> None:
    stores = [PostgresServiceStore(url) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    for store in stores:
        await store.close()


async def test_startup_functions_of_two_processes_seed_one_after_the_other(
    url: str, schema: str
) -> None:
    service = Service("scheduler")
    seeded: list[int] = []

    @service.on_start
    async def seed(state: Any) -> None:
        known = await state.items("fleet")
        if not known:
            for number in range(3):
                state.put("fleet", f"drone-{number}", None)
        seeded.append(len(known))

    async with contextlib.AsyncExitStack() as stack:
        runs = [
            service.run(await stack.enter_async_context(Bus("memory://")), store=url)
            for _ in range(2)
        ]
        await asyncio.gather(*(run.__aenter__() for run in runs))
        for run in runs:
            stack.push_async_exit(run)
    assert sorted(seeded) == [0, 3]  # the second saw what the first committed
    assert len(await rows(schema, "SELECT 1 FROM {s}.state")) == 3


# configuration -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://127.0.0.1/test", "names the service's schema"),
        ("postgresql://127.0.0.1/test?schema=1abc", "names the service's schema"),
        ("postgresql://127.0.0.1/test?schema=a&pool_size=0", "pool_size must be"),
        ("postgresql://127.0.0.1?schema=a", "postgresql://user@host:port/database"),
    ],
)
def test_an_invalid_postgresql_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_service_store(url)


def test_a_postgresql_url_keeps_driver_options_and_hides_the_password() -> None:
    settings = PostgresStoreSettings.from_url(
        "postgresql://app:secret@db:5433/shop?schema=billing&sslmode=disable&pool_size=4"
    )
    assert settings.dsn == "postgresql://app:secret@db:5433/shop?sslmode=disable"
    assert (settings.schema, settings.pool_size) == ("billing", 4)
    assert "secret" not in settings.shown
    assert settings.shown == "postgresql://app:***@db:5433/shop?sslmode=disable (schema billing)"


async def test_an_unreachable_server_fails_to_open_with_backend_error() -> None:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    store = PostgresServiceStore(f"postgresql://postgres@127.0.0.1:{port}/test?schema=x")
    with pytest.raises(BackendError, match="connecting failed"):
        await store.open()
