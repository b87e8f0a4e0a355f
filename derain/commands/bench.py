"""`derain bench`: the op table (ours vs the peers, same harness) — see derain/bench."""
from __future__ import annotations

import importlib
import json
import platform
import sys

import torch


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark our ops and network against the peers, side by side")
    p.add_argument("--quick", action="store_true", help="fewer repeats and images (a smoke run)")
    p.add_argument("--only", nargs="*", default=None, help="suites to run (default: all)")
    p.add_argument("--json", metavar="FILE", help="write all results as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write the tables as Markdown")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.set_defaults(func=run)


def machine_header() -> dict:
    import derain_kernels as dk

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = dk.backend_info()
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "backend": info}


def run(args) -> int:
    from derain.bench import SUITES
    from derain.bench.harness import measure

    if args.threads:
        torch.set_num_threads(args.threads)
    head = machine_header()
    print(f"machine: {head['cpu']}, {head['threads']} threads, torch {head['torch']}")
    print(f"backend: {head['backend']['cpu_kernels']} CPU kernels, CUDA kernels: {head['backend']['cuda_kernels']}")
    suites = args.only or SUITES
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ValueError(f"--only: unknown suite(s) {unknown}; choose from {SUITES}")
    rows = []
    repeats = 3 if args.quick else 7
    for suite in suites:
        for case in importlib.import_module(f"derain.bench.{suite}").cases(quick=args.quick):
            timings = {}
            for c in case.contenders:
                fn = c.make()
                timings[c.name] = measure(fn, warmup=1 if args.quick else 2, repeats=repeats)
            ours = next((c.name for c in case.contenders if c.ours), None)
            for c in case.contenders:
                t = timings[c.name]
                ratio = t.median_ms / timings[ours].median_ms if ours else None
                rows.append({"op": case.op, "mode": case.mode, "shape": case.shape, "impl": c.name,
                             "ours": c.ours, "note": c.note, **t.as_dict(), "speedup_vs_ours": ratio})
                mem = "-" if t.peak_mib is None else f"{t.peak_mib:8.1f}"
                print(f"{case.op:16s} {case.mode:17s} {case.shape:14s} {c.name:22s} "
                      f"{t.median_ms:10.2f} ms  [{t.min_ms:.2f}..{t.max_ms:.2f}]  mem {mem} MiB"
                      + ("" if c.ours or ratio is None else f"  ours {ratio:6.2f}x faster"), flush=True)
            for m in case.missing:
                print(f"{case.op:16s} {case.mode:17s} {case.shape:14s} (skipped: {m})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": head, "rows": rows}, f, indent=1, default=str)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"Machine: {head['cpu']}, {head['threads']} threads, torch {head['torch']}\n\n")
            f.write("| op | mode | shape | impl | median ms | min..max | peak extra MiB | ours faster by |\n")
            f.write("|---|---|---|---|---:|---|---:|---:|\n")
            for r in rows:
                mem = "-" if r["peak_extra_mib"] is None else f"{r['peak_extra_mib']:.1f}"
                ratio = "" if r["ours"] or r["speedup_vs_ours"] is None else f"{r['speedup_vs_ours']:.2f}×"
                f.write(f"| {r['op']} | {r['mode']} | {r['shape']} | {r['impl']} | {r['median_ms']:.2f} | "
                        f"{r['min_ms']:.2f}..{r['max_ms']:.2f} | {mem} | {ratio} |\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(None))
