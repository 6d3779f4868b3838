"""lifecycle: the data layer and Dagster pipeline for media-processing jobs on Supabase.

Importing this package does no work: no engine, no client, no environment read.
"""

__version__ = "0.1.0"
