"""Counting what crossed the gateway in a reliability scenario, at the fakes.

    tally = Tally("crash")
    tally.send("chat-1", "chat-1/0")      # the fake's side produced a message
    tally.accept("chat-1/0")              # the gateway answered its webhook 2xx
    tally.deliver("chat-1", "chat-1/0")   # the other fake received it (once per arrival)
    tally.summary()  # sent, accepted, delivered, lost, duplicated, reordered, parked, ...

A message is *lost* when the gateway accepted it and it neither arrived nor sits parked as
a dead letter; *duplicated* counts arrivals beyond the first; *reordered* counts first
arrivals of a conversation that came after a message sent later in it. Messages parked
(dead-lettered because the outcome of a send was unknown) and replayed later are kept out
of the order count: a replay goes to the tail of its lane by design.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where chaos runs leave their figures (docs/reliability.md is filled from them).
FIGURES_DIR = Path(os.environ.get("GATEWAY_RELIABILITY_DIR", "var/reliability"))


@dataclass
class Tally:
    """Per-conversation send and arrival records of one scenario run."""

    name: str
    injected: list[str] = field(default_factory=list)
    sent_order: dict[str, list[str]] = field(default_factory=dict)
    conversation_of: dict[str, str] = field(default_factory=dict)
    accepted: set[str] = field(default_factory=set)
    arrivals: dict[str, list[str]] = field(default_factory=dict)
    parked: set[str] = field(default_factory=set)
    replayed: set[str] = field(default_factory=set)
    extra: dict[str, Any] = field(default_factory=dict)

    def inject(self, what: str) -> None:
        self.injected.append(what)

    def send(self, conversation: str, key: str) -> None:
        if key in self.conversation_of:
            raise ValueError(f"message {key!r} was already sent")
        self.sent_order.setdefault(conversation, []).append(key)
        self.conversation_of[key] = conversation

    def accept(self, key: str) -> None:
        self.accepted.add(key)

    def deliver(self, conversation: str, key: str) -> None:
        self.arrivals.setdefault(conversation, []).append(key)

    def park(self, key: str) -> None:
        self.parked.add(key)

    def replay(self, key: str) -> None:
        self.replayed.add(key)

    # -- figures ---------------------------------------------------------------------------

    @property
    def sent(self) -> int:
        return len(self.conversation_of)

    def delivered_keys(self) -> set[str]:
        return {key for keys in self.arrivals.values() for key in keys}

    def lost(self) -> set[str]:
        """Accepted, not arrived, not parked: the gateway dropped it."""
        return self.accepted - self.delivered_keys() - self.parked

    def duplicates(self) -> int:
        counts = Counter(key for keys in self.arrivals.values() for key in keys)
        return sum(n - 1 for n in counts.values() if n > 1)

    def reordered(self) -> int:
        """First arrivals that came after a message sent later in the same conversation."""
        out_of_order = 0
        for conversation, keys in self.arrivals.items():
            rank = {key: i for i, key in enumerate(self.sent_order.get(conversation, []))}
            seen: set[str] = set()
            highest = -1
            for key in keys:
                if key in seen or key in self.replayed:
                    continue
                seen.add(key)
                position = rank.get(key, -1)
                if position < highest:
                    out_of_order += 1
                highest = max(highest, position)
        return out_of_order

    def unexpected(self) -> int:
        """Arrivals of messages nobody sent (a mangled or invented message)."""
        return len(self.delivered_keys() - set(self.conversation_of))

    def summary(self) -> dict[str, Any]:
        delivered = self.delivered_keys()
        return {
            "scenario": self.name,
            "injected": list(self.injected),
            "conversations": len(self.sent_order),
            "sent": self.sent,
            "accepted": len(self.accepted),
            "delivered": len(delivered & set(self.conversation_of)),
            "lost": len(self.lost()),
            "duplicated": self.duplicates(),
            "reordered": self.reordered(),
            "parked": len(self.parked),
            "replayed": len(self.replayed),
            "unexpected": self.unexpected(),
            **self.extra,
        }

    def assert_clean(self) -> None:
        """Nothing accepted lost, nothing doubled, nothing out of order, nothing invented."""
        figures = self.summary()
        bad = {k: figures[k] for k in ("lost", "duplicated", "reordered", "unexpected")}
        if any(bad.values()):
            lost = sorted(self.lost())[:10]
            raise AssertionError(f"{self.name}: {bad} (first lost: {lost})\n{figures}")

    def write(self, directory: Path | None = None, suffix: str = "") -> Path:
        """Save the figures as JSON (`var/reliability/{name}{suffix}.json`); returns the path."""
        target = directory or FIGURES_DIR
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{self.name}{suffix}.json"
        path.write_text(json.dumps(self.summary(), indent=2, sort_keys=False) + "\n")
        return path
