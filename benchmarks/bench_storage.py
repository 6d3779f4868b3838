"""Storage benchmark: StorageRepo against the plain supabase client doing the same calls, same run.

    .venv/bin/python benchmarks/bench_storage.py [--rounds 5] [--objects 10000] [--signs 1000]

Against the local Storage server (started here, in a subprocess). Two workloads:
- ``sign_many`` of 1,000 result keys (one ``create_signed_urls`` call of 1000 paths either way;
  the repo adds key validation, the TTL check, metrics and the key -> URL mapping);
- ``remove`` of 10,000 existing objects (ten ``remove`` calls of 1000 either way; the repo adds
  chunking, metrics and the removed-count check).
Objects are put in place through the server's own store before each round (setup, not measured),
so every round removes 10,000 objects that exist. Rounds alternate project/plain; medians, ratio.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from supabase import ClientOptions, create_client

from lifecycle.devstack.storage_server import Store, start_storage_server
from lifecycle.storage import BucketLayout, StorageRepo, result_key

BUCKET = "bench"


def seed(store: Store, keys: list[str]) -> None:
    """Put an object at every key, directly in the server's store (setup only)."""
    for key in keys:
        store.put(BUCKET, key, b"x" * 64, "video/mp4", "3600")


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--signs", type=int, default=1000)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    server = start_storage_server(data_dir)
    http = httpx.Client(timeout=60)
    try:
        repo = StorageRepo.connect(server.url, server.service_role_key, layout=BucketLayout.single(BUCKET))
        repo.ensure_buckets()
        plain = create_client(server.url, server.service_role_key, ClientOptions(httpx_client=http)).storage
        bucket = plain.from_(BUCKET)
        store = Store(data_dir)

        sign_keys = [result_key(uuid.uuid4(), "mp4") for _ in range(args.signs)]
        seed(store, sign_keys)
        sign: dict[str, list[float]] = {"project": [], "plain": []}
        for _ in range(args.rounds):
            sign["project"].append(timed(lambda: repo.sign_many(sign_keys, 600)))
            sign["plain"].append(timed(lambda: bucket.create_signed_urls(sign_keys, 600)))

        remove: dict[str, list[float]] = {"project": [], "plain": []}

        def project_remove(keys: list[str]) -> None:
            result = repo.remove(keys)
            assert len(result.removed) == len(keys), "the repo did not remove every object"

        def plain_remove(keys: list[str]) -> None:
            for i in range(0, len(keys), 1000):
                bucket.remove(keys[i : i + 1000])

        for round_no in range(args.rounds):
            # Alternate who goes first: the server's store gets slower as its WAL grows.
            order = ("project", "plain") if round_no % 2 == 0 else ("plain", "project")
            for side in order:
                keys = [result_key(uuid.uuid4(), "mp4") for _ in range(args.objects)]
                seed(store, keys)
                call = project_remove if side == "project" else plain_remove
                remove[side].append(timed(functools.partial(call, keys)))
        report("sign_many", args.signs, "URLs", sign)
        report("remove", args.objects, "objects", remove)
        repo.close()
    finally:
        http.close()
        server.stop()


def report(name: str, n: int, unit: str, times: dict[str, list[float]]) -> None:
    project = statistics.median(times["project"])
    plain = statistics.median(times["plain"])
    print(
        f"{name:10s} {n:>6} {unit:8s} project {project * 1000:8.1f} ms ({n / project:9.0f}/s)  "
        f"plain {plain * 1000:8.1f} ms ({n / plain:9.0f}/s)  ratio {project / plain:5.2f}  "
        f"(median of {len(times['project'])})"
    )


if __name__ == "__main__":
    main()
