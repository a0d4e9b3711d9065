"""``python -m outbox.sandbox``: run the Craftkit-compatible sandbox server."""

from outbox.sandbox.cli import main

if __name__ == "__main__":
    main()
