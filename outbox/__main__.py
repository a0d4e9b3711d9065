"""``python -m outbox``: the same as the ``outbox`` command."""

from .cli import main

main()
