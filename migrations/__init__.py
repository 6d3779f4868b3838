"""Alembic migrations, shipped inside the wheel as the package ``lifecycle.migrations``.

``lifecycle.db.migrate`` finds this directory through the package; ``env.py`` and the revision files
are loaded by Alembic from their paths, never imported by name.
"""
