"""The embedded development stack: PostgreSQL from the ``pgserver`` wheel and the local Storage server.

Used by ``make run`` (``lifecycle dev``) and by the tests only; production points ``DATABASE_URL`` and
``SUPABASE_URL`` at real services and starts nothing from here.
"""
