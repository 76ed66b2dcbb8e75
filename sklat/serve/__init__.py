"""The model as a service a router calls, learning online from the requests
it served (``sklat serve``; the ``serve`` extra: FastAPI and uvicorn).

- :func:`create_app`: the ASGI application of a model file;
- :class:`ServeSettings`: what it is told.

See the "Serve the model" page for the calls, their bodies and the online
updates.
"""

from ._app import create_app
from ._settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
