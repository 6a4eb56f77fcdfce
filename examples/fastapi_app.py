"""The FastAPI example: ``moesif_users_middleware/_demo/fastapi_app.py`` (read it there).

The example apps live inside the package so that ``moesif-users demo`` runs from any
install. This module names the same app for commands run from a checkout::

    uvicorn examples.fastapi_app:app
"""

from moesif_users_middleware._demo.fastapi_app import app, create_app

__all__ = ["app", "create_app"]
