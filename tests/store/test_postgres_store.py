"""The PostgreSQL store: the shared contract, plus what only a shared database has.

Needs a server: GATEWAY_TEST_POSTGRES_URL (CI sets it). Each test gets a schema of its own,
dropped afterwards. Without a server these tests are skipped, except in CI, where they fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from gateway.errors import MigrationError, StoreError
from gateway.store import open_store
from gateway.store.base import Finished, Store
from gateway.store.contract import LEASE, NOW, StoreContract, item, job
from gateway.store.migrations import latest_version
from gateway.testing.postgres import postgres_schema

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store_url(self, pg_url: str) -> str:
        return pg_url


@pytest.fixture
async def pair(pg_url: str) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one database, as two gateway processes have."""
    one, two = open_store(pg_url), open_store(pg_url)
    await one.open()
    await two.open()
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


@pytest.mark.anyio
async def test_a_lease_held_by_another_process_is_respected_until_it_expires(
    pair: tuple[Store, Store],
) -> None:
    one, two = pair
    a0, a1 = await one.enqueue([job("a", 0), job("a", 1)], NOW)
    assert [j.id for j in await one.claim("crm", "p1", 10, LEASE, NOW)] == [a0, a1]
    # A new store object (a restart of another process) does not free anything at open.
    assert await two.claim("crm", "p2", 10, LEASE, NOW + 1) == []
    taken = await two.claim("crm", "p2", 10, LEASE, NOW + LEASE)
    assert [j.id for j in taken] == [a0, a1]
    await one.finish([Finished(a0)], "p1", NOW + LEASE)  # the late owner's finish
    await two.finish([Finished(a1)], "p2", NOW + LEASE)
    assert await one.get_job(a0) is None and await one.get_job(a1) is None


@pytest.mark.anyio
async def test_lock_excludes_across_processes(pair: tuple[Store, Store]) -> None:
    one, two = pair
    order: list[str] = []
    entered = anyio.Event()
    release = anyio.Event()

    async def first() -> None:
        async with one.lock("tokens:portal"):
            order.append("one in")
            entered.set()
            await release.wait()
            order.append("one out")

    async def second() -> None:
        await entered.wait()
        async with two.lock("tokens:portal"):
            order.append("two in")

    async with anyio.create_task_group() as group:
        group.start_soon(first)
        group.start_soon(second)
        await entered.wait()
        # `two` is now waiting on the server; another name is free meanwhile.
        with anyio.fail_after(5):
            async with two.lock("tokens:other"):
                order.append("other")
        release.set()
    assert order == ["one in", "other", "one out", "two in"]


@pytest.mark.anyio
async def test_a_cancelled_lock_waiter_leaves_no_lock_behind(pair: tuple[Store, Store]) -> None:
    one, two = pair
    async with one.lock("x"):
        with anyio.move_on_after(0.2):
            async with two.lock("x"):
                raise AssertionError("got a lock that was held")
    with anyio.fail_after(5):
        async with two.lock("x"), one.lock("y"):
            pass
    with anyio.fail_after(5):
        async with one.lock("x"):
            pass


@pytest.mark.anyio
async def test_new_jobs_wake_subscribers_of_other_processes(pair: tuple[Store, Store]) -> None:
    one, two = pair
    heard: list[str | None] = []
    listening, got = anyio.Event(), anyio.Event()

    def wake(destination: str | None) -> None:
        heard.append(destination)
        listening.set()
        if destination == "crm":
            got.set()

    await two.subscribe(wake)
    with anyio.fail_after(10):
        await listening.wait()  # the first call, on (re)connecting, says "look everywhere"
        assert heard == [None]
        await one.ingest([item("k1", job("a"))], NOW)
        await got.wait()


@pytest.mark.anyio
async def test_a_command_that_closes_at_once_still_wakes_the_gateways(
    pair: tuple[Store, Store],
) -> None:
    _, gateway = pair
    listening, got = anyio.Event(), anyio.Event()

    def wake(destination: str | None) -> None:
        listening.set()
        if destination == "crm":
            got.set()

    await gateway.subscribe(wake)
    with anyio.fail_after(10):
        await listening.wait()
        tool = open_store(gateway.url, tool=True)  # as `gateway replay` does
        await tool.open()
        await tool.enqueue([job("a")], NOW)
        await tool.close()
        await got.wait()


@pytest.mark.anyio
async def test_concurrent_ingest_and_finish_on_one_lane_never_strand_a_job(
    pair: tuple[Store, Store],
) -> None:
    one, two = pair
    for n in range(30):
        [a] = await one.enqueue([job("a", 2 * n)], NOW)
        [claimed] = await one.claim("crm", "p1", 10, LEASE, NOW)
        assert claimed.id == a
        async with anyio.create_task_group() as group:
            group.start_soon(one.finish, [Finished(a)], "p1", NOW)
            group.start_soon(two.ingest, [item(f"k{n}", job("a", 2 * n + 1))], NOW)
        [b] = await two.claim("crm", "p2", 10, LEASE, NOW)
        await two.finish([Finished(b.id)], "p2", NOW)
    assert await one.destinations_with_work(NOW) == []
    assert await one.stats(NOW) == []


@pytest.mark.anyio
async def test_three_stores_opening_at_once_migrate_once(pg_url: str) -> None:
    stores = [open_store(pg_url) for _ in range(3)]
    try:
        async with anyio.create_task_group() as group:
            for store in stores:
                group.start_soon(store.open)
        versions = {await s.schema_version() for s in stores}
        assert versions == {latest_version("postgres")}
    finally:
        for store in stores:
            await store.close()


@pytest.mark.anyio
async def test_a_newer_schema_is_refused(pg_url: str) -> None:
    store = open_store(pg_url)
    await store.open()
    await store.close()
    from gateway.testing.postgres import execute

    execute(
        pg_url, f"INSERT INTO schema_migrations VALUES ({latest_version('postgres') + 1}, 'x', 0)"
    )
    with pytest.raises(MigrationError, match="only knows up to"):
        await open_store(pg_url).open()


@pytest.mark.anyio
async def test_an_unreachable_server_is_a_store_error() -> None:
    store = open_store("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    with pytest.raises(StoreError, match="cannot open"):
        await store.open()


@pytest.mark.parametrize("url", ["postgresql://gw@localhost/gw", "postgres://gw@db/gw"])
def test_postgres_urls_pick_this_backend(url: str) -> None:
    from gateway.store.postgres import PostgresStore

    store = open_store(url, tool=True)
    assert isinstance(store, PostgresStore) and store.url == url


def test_without_the_driver_the_url_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.delitem(sys.modules, "gateway.store.postgres", raising=False)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    with pytest.raises(StoreError, match=r"pip install 'whatschat-gateway\[postgres\]'"):
        open_store("postgresql://gw@localhost/gw")


def test_the_password_stays_out_of_messages() -> None:
    from gateway.store.postgres import redacted

    assert redacted("postgresql://gw:s3cret@db:5433/gw") == "postgresql://gw:***@db:5433/gw"
    assert redacted("postgresql://gw@db/gw") == "postgresql://gw@db/gw"
