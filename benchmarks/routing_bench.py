"""Routing benchmark: does ``Router.resolve`` stay flat as the route table grows?

Usage::

    taskset -c 0 python benchmarks/routing_bench.py [--out benchmarks/results]

Builds tables of 10, 100, 1,000 and 5,000 routes (prefixes, one-segment templates, ``{path}``
tails, host-specific and method-restricted routes), then times ``Router.resolve`` over a fixed
mix of hits, 404s and 405s. The mix has the same shape for every table, but its hits are spread
across the whole table so the larger tables cannot get away with touching only their first few
routes. Reports the mean ns per match (the best of many short samples, tables taking turns) and
the ratio to the smallest table. Results go to ``<out>/routing.md`` and ``<out>/routing.json``;
the exit status is 1 if a table is more than ``TARGET_RATIO`` times slower than the smallest.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from onegate.errors import OnegateError
from onegate.gateway.config import Match, RouteConfig
from onegate.gateway.routing import Router

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
SIZES = (10, 100, 1_000, 5_000)
REPEATS = 30  # timed samples per table; the best one counts
ROUNDS = 1_000  # passes over the request mix per sample (20,000 matches)
TARGET_RATIO = 1.3  # 5,000 routes vs 10, at most
KINDS = 5  # route i has kind i % KINDS

Request = tuple[str, str | None, str]


def build_routes(count: int) -> list[RouteConfig]:
    routes = []
    for i in range(count):
        kind = i % KINDS
        if kind == 0:
            match = Match(prefix=f"/svc{i}/v1")
        elif kind == 1:
            match = Match(path=f"/svc{i}/items/{{id}}", methods=["GET", "PUT"])
        elif kind == 2:
            match = Match(path=f"/svc{i}/files/{{rest:path}}")
        elif kind == 3:
            match = Match(prefix=f"/svc{i}/v1", host=f"svc{i}.example.com")
        else:
            match = Match(
                path=f"/svc{i}/items/{{id}}/detail", host="*.example.com", methods=["GET"]
            )
        routes.append(RouteConfig(name=f"r{i}", match=match, upstream="backend"))
    return routes


def spread(count: int, kind: int, slot: int, slots: int = 2) -> int:
    """An index of a route of ``kind``, the ``slot``-th of ``slots`` spread over the table."""
    index = (count * (2 * slot + 1)) // (2 * slots)
    return index - index % KINDS + kind


def build_requests(count: int) -> list[Request]:
    requests: list[Request] = []
    for slot in range(2):
        p, t, f, h, d = (spread(count, kind, slot) for kind in range(KINDS))
        requests += [
            ("GET", None, f"/svc{p}/v1/users/42"),  # prefix hit
            ("GET", None, f"/svc{t}/items/123"),  # template hit
            ("PUT", None, f"/svc{t}/items/123"),  # template hit, other method
            ("GET", None, f"/svc{f}/files/a/b/c.txt"),  # tail hit
            ("GET", f"svc{h}.example.com", f"/svc{h}/v1/orders"),  # exact host hit
            ("GET", "api.example.com", f"/svc{d}/items/9/detail"),  # wildcard host hit
            ("POST", None, f"/svc{t}/items/123"),  # 405
            ("GET", None, f"/svc{d}/items/9/detail"),  # 404: host required
            ("GET", None, f"/svc{p}/v2/users"),  # 404 after a partial walk
            ("GET", None, "/unknown/path"),  # 404 at the root
        ]
    return requests


def check(router: Router, requests: list[Request]) -> None:
    """Make sure the mix really is the intended hits and misses before timing it."""
    outcomes = []
    for method, host, path in requests:
        try:
            outcomes.append(router.resolve(method, host, path).route.name)
        except OnegateError as exc:
            outcomes.append(str(exc.status))
    hits = [o for o in outcomes if o.startswith("r")]
    assert len(hits) == 12 and outcomes.count("405") == 2 and outcomes.count("404") == 6, outcomes


def time_once(router: Router, requests: list[Request], rounds: int) -> float:
    """Mean ns per match over ``rounds`` passes of the mix."""
    match = router.match
    start = time.perf_counter_ns()
    for _ in range(rounds):
        for method, host, path in requests:
            try:  # noqa: SIM105 - contextlib.suppress would add its own overhead to every match
                match(method, host, path)
            except OnegateError:
                pass
    return (time.perf_counter_ns() - start) / (rounds * len(requests))


def time_tables(
    tables: list[tuple[int, Router, list[Request]]], repeats: int, rounds: int
) -> dict[int, float]:
    """Best of ``repeats`` short samples per table, the tables taking turns.

    Many short samples, taken in turns, rather than a few long ones: on a shared machine a
    long sample rarely runs undisturbed, and taking turns spreads what disturbance there is
    over all the tables instead of penalising one. The garbage collector
    is off while timing, as in ``timeit``: every table lives in this one process, so a full
    collection during the 10-route run would otherwise pay for the 5,000-route table's objects.
    """
    best = {count: float("inf") for count, _, _ in tables}
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for count, router, requests in tables:
                best[count] = min(best[count], time_once(router, requests, rounds))
    finally:
        gc.enable()
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="samples per table")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="passes of the mix per sample")
    args = parser.parse_args()

    tables = []
    for count in SIZES:
        router = Router(build_routes(count))
        requests = build_requests(count)
        check(router, requests)
        tables.append((count, router, requests))
    best = time_tables(tables, args.repeats, args.rounds)
    rows: list[dict[str, float]] = []
    for count in SIZES:
        rows.append({"routes": count, "ns_per_match": round(best[count], 1)})
        print(f"{count:>6} routes: {best[count]:8.1f} ns/match", flush=True)
    base = rows[0]["ns_per_match"]
    for row in rows:
        row["ratio"] = round(row["ns_per_match"] / base, 3)
    worst = max(row["ratio"] for row in rows)

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "requests_per_round": len(build_requests(SIZES[0])),
        "rounds": args.rounds,
        "repeats": args.repeats,
        "target_ratio": TARGET_RATIO,
        "within_target": worst <= TARGET_RATIO,
    }
    (args.out / "routing.json").write_text(json.dumps({**meta, "results": rows}, indent=2) + "\n")
    lines = [
        "# Routing benchmark",
        "",
        "`Router.resolve` (the route lookup without the cache of recent answers), mean of a "
        f"fixed mix of {meta['requests_per_round']} requests "
        "(12 hits, 6 404s, 2 405s), best of "
        f"{args.repeats} samples of {args.rounds:,} rounds, tables taking turns, gc off while "
        "timing. "
        f"Python {meta['python']}, {meta['platform']}, {meta['date']}.",
        "",
        "| routes | ns/match | ratio to 10 routes |",
        "|-------:|---------:|-------------------:|",
        *(f"| {r['routes']:,} | {r['ns_per_match']:,.0f} | {r['ratio']:.2f}x |" for r in rows),
        "",
        f"Target: every table within {TARGET_RATIO}x of the 10-route one: "
        f"{'met' if meta['within_target'] else 'NOT met'} (worst {worst:.2f}x).",
        "",
    ]
    (args.out / "routing.md").write_text("\n".join(lines))
    print(f"wrote {args.out / 'routing.md'} and {args.out / 'routing.json'}")
    return 0 if meta["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
