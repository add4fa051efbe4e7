"""The throughput comparison the platform is held to, in one script on the same services: N single-step no-op
runs through the platform's API until PostgreSQL records them succeeded, then N no-op tasks on each peer.

    python -m bench.compare --runs 20000 --repeat 3

Each system runs `--repeat` times, interleaved (platform, peers, platform, peers...) so drift in the machine's
speed touches all of them alike; the median of each is compared. Prints one JSON line per run, then a summary
line with the medians and the platform's ratio to each peer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics

from bench.peers import PEERS, run_peer
from bench.platform import platform, throughput


def platform_throughput(runs: int, workers: int) -> dict:
    with platform(workers=workers) as deployment:
        return asyncio.run(throughput(deployment, runs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="platform worker processes")
    args = parser.parse_args(argv)

    per_second: dict[str, list[float]] = {"platform": [], **{peer: [] for peer in PEERS}}
    for _ in range(args.repeat):
        figures = platform_throughput(args.runs, args.workers)
        print(json.dumps({"system": "platform", "workers": args.workers, **figures}), flush=True)
        per_second["platform"].append(figures["runs_per_s"])
        for peer in PEERS:
            figures = run_peer(peer, args.runs)
            print(json.dumps({"system": peer, **figures}), flush=True)
            per_second[peer].append(figures["tasks_per_s"])
    medians = {system: round(statistics.median(values), 1) for system, values in per_second.items()}
    ratios = {f"platform_vs_{peer}": round(medians["platform"] / medians[peer], 2) for peer in PEERS}
    print(json.dumps({"summary": "median runs (tasks) per second", "runs": args.runs, **medians, **ratios}))


if __name__ == "__main__":
    main()
