"""Summarise an Nsight Compute source export: where a kernel's warps stall, and its shared-memory wavefronts.

    ncu --import rep.ncu-rep --page source --csv --print-source sass -k regex:bwd_hopper > source.csv
    python3 benchmarks/ncu_stalls.py source.csv [--top 40]

Prints the stall reasons over all samples, the instructions with the most samples (address, share of all samples,
times executed, SASS, their two largest reasons) and, per shared-memory opcode, wavefronts against the ideal
(more than ideal is bank conflicts). Session 28 found the backward's dQ staging stores this way (4 wavefronts
where 2 would do). Samples at NOPs executed a few hundred times are idle warps parked at a barrier (the
loader's warpgroup beside its one working warp), not a cost.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict


def _number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="ncu --page source --csv --print-source sass output")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    with open(args.csv, newline="") as fh:
        rows = list(csv.reader(fh))
    start = next(i for i, row in enumerate(rows) if row and row[0] == "Address")
    header, data = rows[start], rows[start + 1 :]
    col = {name: i for i, name in enumerate(header)}

    def value(row: list[str], name: str) -> float:
        return _number(row[col[name]]) if name in col and col[name] < len(row) else 0.0

    samples = "Warp Stall Sampling (All Samples)"
    total = sum(value(row, samples) for row in data) or 1.0
    reasons = [name for name in header if name.startswith("stall_") and "Not Issued" not in name]
    print(f"{len(data)} instructions, {total:.0f} samples; stall reasons:")
    for name in sorted(reasons, key=lambda r: -sum(value(row, r) for row in data))[:10]:
        print(f"  {name[6:]:18} {sum(value(row, name) for row in data) / total * 100:5.1f} %")
    print(f"\ntop {args.top} instructions by samples:")
    for row in sorted(data, key=lambda r: -value(r, samples))[: args.top]:
        top2 = sorted(((value(row, r), r[6:]) for r in reasons), reverse=True)[:2]
        print(
            f"  {row[0][-6:]} {value(row, samples) / total * 100:5.2f} % x{value(row, 'Instructions Executed'):>10.0f}"
            f"  {row[1].strip()[:64]:64} {top2[0][1]} {top2[0][0]:.0f}, {top2[1][1]} {top2[1][0]:.0f}"
        )
    shared: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for row in data:
        waves = value(row, "L1 Wavefronts Shared")
        if waves:
            words = row[1].split()
            opcode = words[1] if words[0].startswith("@") else words[0]
            entry = shared[opcode]
            entry[0] += value(row, "Instructions Executed")
            entry[1] += waves
            entry[2] += value(row, "L1 Wavefronts Shared Ideal")
    print("\nshared memory: opcode, executed, wavefronts, ideal, per execution")
    for opcode, (executed, waves, ideal) in sorted(shared.items(), key=lambda kv: -kv[1][1]):
        print(f"  {opcode:26} {executed:12.0f} {waves:14.0f} {ideal:14.0f} {waves / max(executed, 1):6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
