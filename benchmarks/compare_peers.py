#!/usr/bin/env python
"""Before/after table of ``bench_peers.py`` results: one contender's time / bound, per (loss, B).

Each side is one or more JSON files of ``bench_peers.py`` (runs alternated in one session, so a slow
spell of the machine hits both sides). The table gives every run's ratio and the change of their
means; ratios to the bound, not seconds, so the machine's state between runs matters less.

    python benchmarks/compare_peers.py --before b1.json b2.json --after a1.json a2.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def ratios(paths: list[Path], label: str) -> dict[tuple[str, int], list[float]]:
    """(loss, B) -> the contender's time / bound in each file, in file order."""
    out: dict[tuple[str, int], list[float]] = {}
    for path in paths:
        for record in json.loads(path.read_text())["results"]:
            row = record.get("contenders", {}).get(label)
            if record.get("status") == "ok" and row is not None:
                out.setdefault((record["loss"], record["batch_size"]), []).append(row["ratio_to_bound"])
    return out


def table(before: dict, after: dict, label: str) -> list[str]:
    lines = [
        f"| loss | B | {label} / bound, before | after | change of the mean |",
        "|---|---:|---|---|---:|",
    ]
    for key in sorted(set(before) & set(after), key=lambda k: (k[0], k[1])):
        old, new = statistics.mean(before[key]), statistics.mean(after[key])
        lines.append(
            f"| {key[0]} | {key[1]} | {', '.join(f'{x:.2f}×' for x in before[key])} | "
            f"{', '.join(f'{x:.2f}×' for x in after[key])} | {new / old - 1:+.0%} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, nargs="+", required=True, help="bench_peers.py JSON files")
    parser.add_argument("--after", type=Path, nargs="+", required=True, help="bench_peers.py JSON files")
    parser.add_argument("--label", default="default", help="contender (default: default)")
    args = parser.parse_args(argv)
    before, after = ratios(args.before, args.label), ratios(args.after, args.label)
    if not set(before) & set(after):
        parser.error(f"no (loss, B) has a {args.label!r} result on both sides")
    print("\n".join(table(before, after, args.label)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
