"""The Flask example: ``moesif_users_middleware/_demo/flask_app.py`` (read it there).

The example apps live inside the package so that ``moesif-users demo`` runs from any
install. This module names the same app for commands run from a checkout::

    flask --app examples.flask_app run
    gunicorn --preload -w 2 'examples.flask_app:create_app()'
"""

from moesif_users_middleware._demo.flask_app import create_app

__all__ = ["create_app"]
