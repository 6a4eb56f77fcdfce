"""The Django example project: settings, URLs, WSGI/ASGI entry points and the ``accounts``
app. Use it with ``DJANGO_SETTINGS_MODULE=moesif_users_middleware._demo.django_app.settings``.
"""
