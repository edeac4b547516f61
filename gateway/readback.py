"""Finding sends in a provider's own lists, for `find_sent` (the part every such search shares).

Some providers take no id of ours (Chat API, GREEN-API), so a send whose answer was lost
is recognised by what it was: its chat, kind and text, from the attempt's start on, in
the lists the provider keeps of what it took (a send queue, a history, a journal). The
provider knows its lists and how an entry is compared; what is the same for every such
search is here:

* each item of the batch is planned on its own (`plan`): a `DeliveryError` raised for one
  item (it cannot be recognised) answers that item only;
* the lists are read once for the whole batch (`look_up`), and only if some item is sought;
* a listed message stands for one item at most, and never for a message the gateway
  recorded as another send (`Claims`): two identical texts in flight are told apart by
  count, the oldest entry answering the first item;
* a message sent in parts is asked about its first unsent part (`Planned.done` are the
  parts known to have landed); when all of them had, only the answer is left to give.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from gateway.errors import DeliveryError
from gateway.providers import Hub, Landing, Outgoing

#: What the provider looks for in its lists: one part of one item.
Sought = TypeVar("Sought")


@dataclass(frozen=True, slots=True)
class Planned(Generic[Sought]):
    """One item's search: how many parts it is sent as, the ids of those known to have
    landed, and the next part to look for (None: every part had landed)."""

    parts: int
    sought: Sought | None
    done: list[str] = field(default_factory=list)


class Claims:
    """The listed messages already standing for an item of this batch, or for another send."""

    def __init__(self, hub: Hub, instance: str) -> None:
        self.hub = hub
        self.instance = instance
        self._taken: set[str] = set()

    async def take(self, message_id: object) -> str | None:
        """`message_id` as the found id of the item asking, or None when it may not be:
        no id, taken by another item of the batch, or recorded by the gateway for another
        message (an earlier part of the same item counts too)."""
        if not isinstance(message_id, str) or not message_id or message_id in self._taken:
            return None
        if await self.hub.was_sent_by_gateway(self.instance, message_id):
            return None
        self._taken.add(message_id)
        return message_id


#: Finds one sought part in the lists read for the batch: its id, or None.
Match = Callable[[Sought, Claims], Awaitable[str | None]]


async def find_in_lists(
    batch: Sequence[Outgoing],
    claims: Claims,
    *,
    plan: Callable[[Outgoing], Awaitable[Planned[Sought]]],
    look_up: Callable[[list[Sought]], Awaitable[Match[Sought]]],
    answer: Callable[[Outgoing, int, list[str], str | None], Awaitable[Landing]],
) -> list[Landing]:
    """One `Landing` per item of `batch`, in order.

    `look_up` reads the lists for everything sought and returns how one part is matched in
    them; `answer` turns an item's parts known to have landed and the id found for the
    part sought (None: not found) into its landing, keeping the progress of parted sends.
    """
    plans: list[Planned[Sought] | DeliveryError] = []
    for item in batch:
        try:
            plans.append(await plan(item))
        except DeliveryError as exc:
            plans.append(exc)
    sought = [p.sought for p in plans if isinstance(p, Planned) and p.sought is not None]
    match = await look_up(sought) if sought else None
    answers: list[Landing] = []
    for item, planned in zip(batch, plans, strict=True):
        if isinstance(planned, DeliveryError):
            answers.append(planned)
        elif planned.sought is None or match is None:
            # Every part went out; only the answer was left to give.
            done = planned.done
            answers.append(await answer(item, planned.parts, done[:-1], done[-1]))
        else:
            found = await match(planned.sought, claims)
            answers.append(await answer(item, planned.parts, planned.done, found))
    return answers
