"""The delivery phase: make each done entry's share links and send its emails, exactly once.

Craftkit's share and email endpoints take no idempotency key, so a create whose answer was lost
cannot simply be sent again: that would make a second link or send a second email. Instead:

1. Before a create is sent, the delivery is recorded as ``unconfirmed`` with the time the
   attempt started, durably (:func:`outbox.outcomes.delivery_sending`).
2. The answer is recorded (``delivered``, or a refusal); a lost answer, a 5xx or a crash leaves
   the delivery ``unconfirmed``.
3. An ``unconfirmed`` delivery is never created again blindly: the render's shares are listed
   first and the one that matches is adopted (:func:`outbox.outcomes.shares_listed`); only if
   none matches is the create sent again, after recording the new attempt.

What each answer means is decided in :mod:`outbox.outcomes`; this module does the requests and
applies the outcomes (:meth:`outbox.pool.Crew.apply_delivery`).
"""

from __future__ import annotations

import threading

from . import outcomes
from .client import CraftkitClient, Share
from .deliveries import EMAIL, Delivery, DeliveryState
from .errors import RemoteError
from .pool import Crew, Phase


class Courier:
    """Carries out due deliveries of done entries."""

    def __init__(self, crew: Crew, client: CraftkitClient) -> None:
        self.crew = crew
        self.client = client

    def delivery_phase(self, *, deadline: float | None, only: str | None = None) -> Phase[Delivery]:
        """Carrying out due deliveries (or just the delivery ``only``), as a phase of the
        engine's pipeline."""
        return self.crew.deliveries(
            lambda delivery: self.deliver(delivery, deadline=deadline), only=only
        )

    def deliver_due(
        self,
        *,
        deadline: float | None = None,
        stop: threading.Event | None = None,
        only: str | None = None,
    ) -> int:
        """Carry out every due delivery (or just the delivery ``only``); returns how many
        were handled."""
        return self.crew.work(
            [self.delivery_phase(deadline=deadline, only=only)], deadline=deadline, stop=stop
        )

    def deliver(self, delivery: Delivery, *, deadline: float | None) -> None:
        """Carry out one leased delivery: adopt what a lost create made, or create it."""
        crew = self.crew
        entry = crew.journal.get(delivery.entry_id)
        render_id = entry.render_id
        assert render_id is not None, "a done entry always has a render id"
        if delivery.state is DeliveryState.UNCONFIRMED:
            try:
                shares = self.client.list_shares(render_id, deadline=deadline)
            except RemoteError as exc:
                outcome = outcomes.listing_failed(
                    delivery, exc, now=crew.clock.now(), schedule=crew.schedule
                )
                crew.apply_delivery(delivery, outcome, exc)
                return
            move = outcomes.shares_listed(
                delivery,
                shares,
                recorded=crew.journal.recorded_share_ids(entry.id),
                now=crew.clock.now(),
                schedule=crew.schedule,
            )
        else:
            move = outcomes.delivery_sending(delivery, now=crew.clock.now(), schedule=crew.schedule)
        sending = crew.apply_delivery(delivery, move)
        if move.keep_lease and sending is not None:
            self._create(sending, render_id, deadline)

    def _create(self, delivery: Delivery, render_id: str, deadline: float | None) -> None:
        """Send the create whose attempt is on record, and record what came back."""
        crew = self.crew
        try:
            share = self._send(delivery, render_id, deadline)
        except RemoteError as exc:
            outcome = outcomes.delivery_failed(
                delivery, exc, now=crew.clock.now(), schedule=crew.schedule
            )
            crew.apply_delivery(delivery, outcome, exc)
            return
        crew.apply_delivery(
            delivery, outcomes.delivery_created(delivery, share, now=crew.clock.now())
        )

    def _send(self, delivery: Delivery, render_id: str, deadline: float | None) -> Share:
        if delivery.channel == EMAIL:
            assert delivery.to is not None, "an email delivery always has an address"
            return self.client.send_email(
                render_id,
                to=delivery.to,
                recipient_name=delivery.recipient_name,
                message=delivery.message,
                expires_at=delivery.expires_at,
                deadline=deadline,
            )
        return self.client.create_share(
            render_id, message=delivery.message, expires_at=delivery.expires_at, deadline=deadline
        )
