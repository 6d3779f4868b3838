"""Side-by-side benchmarks: the project's code against raw psycopg 3 doing the same SQL, same run.

``python -m benchmarks [area ...] [--quick]`` runs ``benchmarks/bench_<area>.py`` for each area
(all of them by default) and rewrites that area's section of ``BENCHMARKS.md``.
"""
