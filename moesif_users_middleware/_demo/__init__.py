"""The example apps that ``moesif-users demo`` drives, shipped inside the package so the
demo runs from any install (a wheel, not only a source checkout).

Each one is a small, complete API with the adapter wired in the way its README section
describes; read them as examples:

- ``flask_app``: Flask + Flask-Login API tokens (``MoesifUsers`` extension);
- ``fastapi_app``: FastAPI with a bearer-token dependency (Starlette middleware);
- ``starlette_app``: Starlette ``AuthenticationMiddleware`` with API keys;
- ``django_app``: a Django project (settings, URLs, WSGI/ASGI entry points) with one app,
  ``accounts`` (companies, member profiles, signed API tokens);
- ``accounts``: the account record and password check the first three share.

Importing this package imports no framework; each module imports only its own.
"""
