"""Entry and delivery ids: 16 hex digits that sort by creation time.

An id is a 64-bit number: the Unix time in seconds (32 bits), then 32 bits that start at a
random point each second and step forward by a random amount for every further id made in that
second, as MongoDB's ObjectId and ULID's monotonic mode do. So ids made later sort later (within
a process always, across processes by the second), and a new entry's id lands at the end of the
journal's indexes instead of on a random page of each: an insert touches the same few pages at
a million entries as at ten. The random parts keep ids hard to guess, though not secret (they
are not meant as one), and different from another process's ids made in the same second.

Ids from older journals (16 random hex digits) stay as they are; both kinds are printed, looked
up and prefix-matched alike.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

#: What a journal asks for a new id: the Unix time the entry or delivery is made at -> its id.
NewId = Callable[[float], str]

#: Ids made in one second by one process start below 2 ** this, leaving the rest for their steps.
_START_BITS = 31
#: Each further id in the same second is ahead of the last by 1 to 2 ** this.
_STEP_BITS = 16
_STEP = 1 << _STEP_BITS
_LOW = 32
_MASK = (1 << 64) - 1


class IdMaker:
    """Makes time-ordered ids; thread-safe. ``rng`` is replaceable so tests can repeat ids."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.SystemRandom()
        self._lock = threading.Lock()
        self._last = 0

    def __call__(self, now: float) -> str:
        """A new id for something made at Unix time ``now``, above every id made before here.

        If the clock goes back, or one second sees more ids than its 32 bits hold, the ids run
        ahead of the clock rather than repeat or go back.
        """
        seconds = int(now) & 0xFFFFFFFF
        with self._lock:
            # One draw for both random parts (a system random number costs a system call).
            bits = self._rng.getrandbits(_START_BITS + _STEP_BITS)
            fresh = (seconds << _LOW) | (bits >> _STEP_BITS)
            after = self._last + 1 + (bits & (_STEP - 1))
            value = max(fresh, after) & _MASK
            self._last = value
        return f"{value:016x}"


#: The id maker that journals use unless given another.
new_id = IdMaker()
