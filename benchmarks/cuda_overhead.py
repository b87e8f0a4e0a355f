"""The cost of one call of every public op: `derain bench --only overhead`, with this script's
old command line (scripts/gpu_check.sh runs it).

    python benchmarks/cuda_overhead.py [--json FILE] [--device cpu|cuda ...] [--quick | --smoke]

Runs the call-overhead section of `derain bench` (derain/bench/overhead.py: µs per call on tiny
tensors of our public function, of the bare torch.ops.derain call it makes and of the nearest
torch op, without and with an input that requires grad) on the CPU, and on the GPU too when
torch sees one; prints its report, then the same table in Markdown under a `| case |` header
(the line scripts/gpu_check.sh looks for). --json writes `derain bench`'s JSON.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import derain  # noqa: F401
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None, metavar="FILE", help="write derain bench's JSON")
    ap.add_argument("--device", nargs="+", choices=["cpu", "cuda"], default=None,
                    help="default: cpu, and cuda when torch sees a GPU")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer timed calls")
    size.add_argument("--smoke", action="store_true", help="a few calls: checks that it runs")
    args = ap.parse_args(argv)

    from derain.bench import report
    from derain.cli import build_parser
    from derain.commands import bench

    forwarded = ["bench", "--only", "overhead", "--no-progress"]
    forwarded += ["--quick"] if args.quick else ["--smoke"] if args.smoke else []
    forwarded += ["--json", args.json] if args.json else []
    forwarded += ["--device", *args.device] if args.device else []
    try:
        results = bench.execute(build_parser().parse_args(forwarded))
    except ValueError as exc:
        print(f"cuda_overhead: error: {exc}", file=sys.stderr)
        return 2
    table, _ = report.overhead_table(results, first="case")
    print("\n" + table.markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
