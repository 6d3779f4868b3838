"""``python -m benchmarks [area ...] [--quick]``: run benchmark areas and update BENCHMARKS.md."""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import subprocess
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
    known, _ = parser.parse_known_args(argv)
    selected = known.areas or areas
    unknown = [a for a in selected if a not in areas]
    if unknown:
        parser.error(f"unknown area(s): {', '.join(unknown)}; available: {', '.join(areas)}")
    # Only the selected modules are imported (a module may be heavy or need services).
    modules = {area: importlib.import_module(f"benchmarks.bench_{area}") for area in selected}
    for module in modules.values():
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser)
    args = parser.parse_args(argv)
    status = 0
    server: BenchServer | None = None
    facts: dict[str, str] = {}
    try:
        for area, module in modules.items():
            if not hasattr(module, "run"):
                # A stand-alone script (its own main() and output): run it as such, passing
                # --quick only to scripts that take it.
                takes_quick = "--quick" in inspect.getsource(module)
                command = [sys.executable, "-m", f"benchmarks.bench_{area}"]
                command += ["--quick"] if args.quick and takes_quick else []
                status |= subprocess.call(command)  # our own interpreter and module
                continue
            if server is None:
                server = BenchServer()
                facts = machine_facts(server)
            bench = Bench(server=server, quick=args.quick, options=args)
            report = module.run(bench)
            markdown = render_section(area, module.TITLE, report, facts, args.quick)
            print(markdown)
            if not args.no_write:
                write_section(area, markdown)
    finally:
        if server is not None:
            server.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
