"""The data layer: tables, the engine, repositories and the unit of work."""

from lifecycle.db.engine import Database
from lifecycle.db.unit_of_work import Transaction

__all__ = ["Database", "Transaction"]
