"""``outbox dashboard``: a local web page that shows the queue live and lets its owner act on it.

:class:`DashboardApp` is the WSGI application (mount it in your own app);
:class:`DashboardServer` serves it with the standard library (what :meth:`Outbox.dashboard`
and the ``outbox dashboard`` command use).
"""

from .app import DashboardApp
from .server import DashboardServer

__all__ = ["DashboardApp", "DashboardServer"]
