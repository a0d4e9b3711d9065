"""Journal-wide facts in words: what ``outbox status`` prints and the dashboard shows.

The dispatcher records the last connectivity check, key refusal, server trouble and rate limit
in the journal (:meth:`~outbox.store.Journal.set_status`); this turns them into lines a person
can act on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import ENV_API_KEY

#: fact name -> (label, words when fine, words when not)
_LABELS = {
    "connectivity": ("network", "online", "offline"),
    "auth": ("api key", "accepted", f"refused — fix {ENV_API_KEY}"),
    "server": ("server", "ok", "trouble"),
    "rate_limit": ("rate limit", "none", "hit — requests were slowed down"),
}


@dataclass(frozen=True)
class NetworkFact:
    """One recorded fact: ``ok`` says whether it is good news; ``at`` when it was observed.

    Every fact is observed by whoever talked to Craftkit last and replaced when a later
    answer contradicts it (a real answer after an outage, a clean answer after a rate
    limit), so its time says how fresh it is.
    """

    name: str
    label: str
    ok: bool
    text: str
    at: str | None

    def line(self) -> str:
        return f"{self.label.ljust(10)} {self.text} (as of {self.at})"


def network_facts(facts: Mapping[str, Any]) -> list[NetworkFact]:
    """The last known connectivity, key, server and rate-limit facts that were recorded."""
    found = []
    for name, (label, good, bad) in _LABELS.items():
        fact = facts.get(name)
        if not isinstance(fact, dict):
            continue
        ok = bool(fact.get("online", fact.get("ok", not fact.get("limited", False))))
        text = good if ok else bad
        if fact.get("reason") and not ok:
            text += f": {fact['reason']}"
        found.append(NetworkFact(name, label, ok, text, facts.get(name + "_at")))
    return found


def concurrency_line(facts: Mapping[str, Any]) -> str | None:
    """The number of requests in flight at once that the engine last settled on, if known."""
    fact = facts.get("concurrency")
    if not isinstance(fact, dict) or not isinstance(fact.get("current"), int):
        return None
    return (
        f"{'requests'.ljust(10)} {fact['current']} at once (configured {fact.get('configured')}, "
        f"at most {fact.get('max')}; as of {facts.get('concurrency_at')})"
    )
