"""What the store contract's tests are made of: a fixed clock, a lease, jobs, events and
id map rows, built the same way by every part of the contract."""

from __future__ import annotations

from gateway.store.base import IdMapping, IngestItem, Job, JobKind, NewJob

NOW = 1_700_000_000.0
LEASE = 30.0


def job(
    lane: str = "lane-a", n: int = 0, *, destination: str = "crm", kind: JobKind = "send"
) -> NewJob:
    return NewJob(
        kind=kind,
        route="route-1",
        source="channel",
        destination=destination,
        lane=lane,
        payload={"lane": lane, "n": n},
    )


def item(key: str, *jobs: NewJob, instance: str = "wa-1") -> IngestItem:
    return IngestItem(instance=instance, dedupe_key=key, event={"key": key}, jobs=jobs)


def mapping(source_id: str, destination_id: str, route: str = "route-1") -> IdMapping:
    return IdMapping(
        route=route,
        source="channel",
        source_id=source_id,
        destination="crm",
        destination_id=destination_id,
        conversation_id="chat-1",
        extra={"im": {"chat": 7}},
    )


def ids(jobs: list[Job]) -> list[int]:
    return [j.id for j in jobs]
