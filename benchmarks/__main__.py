"""``python -m benchmarks [area ...] [--quick]``: run benchmark areas and update BENCHMARKS.md."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import benchmarks
from benchmarks.harness import Bench, BenchServer, machine_facts, render_section, write_section


def available_areas() -> list[str]:
    """Every ``bench_<area>`` module in the package."""
    names = [m.name for m in pkgutil.iter_modules(benchmarks.__path__)]
    return sorted(n.removeprefix("bench_") for n in names if n.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    areas = available_areas()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("areas", nargs="*", help=f"areas to run (default: all of {', '.join(areas)})")
    parser.add_argument("--quick", action="store_true", help="smaller data and fewer rounds")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    modules = {area: importlib.import_module(f"benchmarks.bench_{area}") for area in areas}
    for module in modules.values():
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser)
    args = parser.parse_args(argv)
    unknown = [a for a in args.areas if a not in modules]
    if unknown:
        parser.error(f"unknown area(s): {', '.join(unknown)}; available: {', '.join(areas)}")
    server = BenchServer()
    try:
        facts = machine_facts(server)
        for area in args.areas or areas:
            module = modules[area]
            bench = Bench(server=server, quick=args.quick, options=args)
            report = module.run(bench)
            markdown = render_section(area, module.TITLE, report, facts, args.quick)
            print(markdown)
            if not args.no_write:
                write_section(area, markdown)
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
