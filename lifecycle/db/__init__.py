"""The data layer: the pool (``Database``), the unit of work, the repositories and the SQL catalogue.

``tables`` declares the schema for Alembic and the drift check (``migrate``); nothing at run time
imports either.
"""

from lifecycle.db.engine import Database
from lifecycle.db.unit_of_work import Transaction

__all__ = ["Database", "Transaction"]
