"""Dagster definitions, one module per concern; ``lifecycle.definitions`` merges them."""
