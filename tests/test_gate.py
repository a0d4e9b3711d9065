"""The gate's shared facts, as recorded in the journal for ``outbox status``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import httpx
import pytest
from support import FakeClock

from outbox import Outbox
from outbox.client import CraftkitClient
from outbox.errors import ServerError
from outbox.gate import Gate


@pytest.fixture
def gate(ob: Outbox) -> Iterator[Gate]:
    client = CraftkitClient(
        "https://api.craftkit.test",
        "ck_test_gate",
        transport=httpx.MockTransport(lambda request: httpx.Response(200)),
    )
    try:
        yield Gate(client, ob.journal, clock=FakeClock())
    finally:
        client.close()


class _PauseOnTrouble(logging.Handler):
    """Holds the thread that logs "server trouble" until told to go on: the moment between
    noting the trouble and recording it, when another worker's answer can come in."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = threading.Event()
        self.resume = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "server trouble" in record.getMessage():
            self.reached.set()
            self.resume.wait(30)


def test_the_server_status_recorded_last_is_the_latest(ob: Outbox, gate: Gate) -> None:
    pause = _PauseOnTrouble()
    logger = logging.getLogger("outbox.gate")
    logger.addHandler(pause)
    try:
        # One worker gets a 503 and is held before it records the trouble...
        failing = threading.Thread(
            target=gate.server_error, args=(ServerError("503 queue_unavailable", status=503),)
        )
        failing.start()
        assert pause.reached.wait(30)
        # ...while another worker's answer shows the server healthy again.
        gate.answered()
        pause.resume.set()
        failing.join(30)
        assert not failing.is_alive()
    finally:
        logger.removeHandler(pause)
    assert ob.status()["server"] == {"ok": True, "reason": None}
    # Trouble that lasts is recorded with its reason.
    gate.server_error(ServerError("500 internal", status=500))
    assert ob.status()["server"] == {"ok": False, "reason": "500 internal"}
