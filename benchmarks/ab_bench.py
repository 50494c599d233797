"""Before/after benchmark: two onegate builds, alternated in one run, against one upstream.

Usage::

    python benchmarks/ab_bench.py --before REV --after PATH|REV [--rounds 3] [--duration 10]
                                  [--variants onegate,onegate-edge]

``--before`` and ``--after`` are each a git revision (checked out into a temporary worktree
and run from this venv with ``PYTHONPATH`` pointing at its ``src``) or ``.`` for the working
tree. The harness is ``proxy_bench.py``'s: an upstream nginx on core 1, the proxy on core 0,
wrk on core 1, 32 and then 1 connection. Builds and variants are alternated round after round
(before, after, before, after...), because this VM drifts: only ratios measured in the same
run, medians over rounds, mean anything. Writes ``<out>/ab.md`` and ``<out>/ab.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import proxy_bench as bench

VARIANTS = ("onegate", "onegate-edge")


def launcher(build: str, scratch: Path) -> Path:
    """An executable that runs onegate from ``build`` with this venv's packages."""
    if build == ".":
        src = bench.REPO_ROOT / "src"
    else:
        tree = scratch / f"tree-{build.replace('/', '_')}"
        subprocess.run(
            ["git", "-C", str(bench.REPO_ROOT), "worktree", "add", "--detach", str(tree), build],
            check=True,
            capture_output=True,
        )
        src = tree / "src"
    script = scratch / f"onegate-{build.replace('/', '_')}"
    script.write_text(f'#!/bin/sh\nPYTHONPATH="{src}" exec "{sys.executable}" -m onegate "$@"\n')
    script.chmod(0o755)
    return script


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Before/after proxy benchmark",
        "",
        f"`{results['command']}`, {results['rounds']} alternated rounds of "
        f"{results['duration']} s per load; median (min to max).",
        "",
        "| variant | build | req/s @32 | p50 @32 (ms) | p99 @32 (ms) | p50 @1 (ms) | after/before "
        "req/s @32 |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for variant, builds in results["variants"].items():
        before = builds["before"]["rps32"]["median"]
        for build in ("before", "after"):
            b = builds[build]

            def cell(key: str, fmt: str, b: dict[str, Any] = b) -> str:
                s = b[key]
                return f"{s['median']:{fmt}} ({s['min']:{fmt}} to {s['max']:{fmt}})"

            ratio = f"{b['rps32']['median'] / before:.2f}x" if build == "after" else ""
            lines.append(
                f"| {variant} | {build} ({results['builds'][build]}) | {cell('rps32', ',.0f')} "
                f"| {cell('p50_32', '.3f')} | {cell('p99_32', '.3f')} | {cell('p50_1', '.3f')} "
                f"| {ratio} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", default=".")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=bench.DEFAULT_OUT)
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    command = " ".join(["python benchmarks/ab_bench.py", *(argv or sys.argv[1:])])
    bench.ensure_tools()
    bench.WORK_DIR.mkdir(parents=True, exist_ok=True)
    bench.kill_stale_processes()
    samples: dict[tuple[str, str], list[bench.Row]] = {}
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        builds = {"before": launcher(args.before, scratch), "after": launcher(args.after, scratch)}
        upstream_port = bench.free_port()
        upstream = bench.upstream_service(upstream_port)
        upstream.start()
        try:
            bench.wait_ready(upstream, upstream_port)
            for round_number in range(args.rounds):
                order = ("before", "after") if round_number % 2 == 0 else ("after", "before")
                for variant in variants:
                    for build in order:
                        bench.log(f"round {round_number + 1}: {variant} {build}")
                        row = bench.bench_proxy(
                            variant, upstream_port, args.duration, builds[build]
                        )
                        if not row.valid:
                            print(f"{variant} {build} failed: {row.error}", file=sys.stderr)
                            return 1
                        samples.setdefault((variant, build), []).append(row)
        finally:
            upstream.stop()
            for tree in scratch.glob("tree-*"):
                subprocess.run(
                    ["git", "-C", str(bench.REPO_ROOT), "worktree", "remove", "--force", str(tree)],
                    check=False,
                    capture_output=True,
                )
    results: dict[str, Any] = {
        "command": command,
        "rounds": args.rounds,
        "duration": args.duration,
        "builds": {"before": args.before, "after": args.after},
        "variants": {},
    }
    for variant in variants:
        results["variants"][variant] = {}
        for build in ("before", "after"):
            rows = samples[(variant, build)]
            results["variants"][variant][build] = {
                "rps32": summary([r.loads[32].rps for r in rows]),
                "p50_32": summary([r.loads[32].p50_ms for r in rows]),
                "p99_32": summary([r.loads[32].p99_ms for r in rows]),
                "p50_1": summary([r.loads[1].p50_ms for r in rows]),
            }
    args.out.mkdir(parents=True, exist_ok=True)
    report = markdown(results)
    (args.out / "ab.md").write_text(report)
    (args.out / "ab.json").write_text(json.dumps(results, indent=2) + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
