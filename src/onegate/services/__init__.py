"""The consolidated Python services (to come: ai, payments, ml), one package each.

Every service has the same shape: ``app.py`` (the ASGI factory ``create_app(config)``),
``config.py`` (its typed config section), ``schema.py`` (its tables) and ``migrations/`` (their
Alembic history, run through :class:`onegate.storage.SqlStore` with the service's own version
table). A service never imports the gateway: it may use the base layer, ``storage``,
``observability`` and the identity contract only.
"""
