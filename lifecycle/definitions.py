"""The Dagster code location: ``lifecycle.definitions:defs`` (see ``lifecycle/defs/``).

``defs`` is built lazily when Dagster loads the location (cron strings come from the settings),
so importing this module does nothing.
"""

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    """The code location, built from the current settings."""
    from lifecycle.defs.location import build_definitions
    from lifecycle.settings import Settings

    return build_definitions(Settings.load())
