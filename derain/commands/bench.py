"""`derain bench`: TIP Table IV reproduced, the op table, the cost of a call and one training step, ours vs the peers.

Sections: "network" (derain/bench/network.py), every op suite in derain.bench.SUITES,
"overhead" (derain/bench/overhead.py: the cost of one call on tiny tensors) and
"train_step" (derain/bench/train_step.py); `--only` picks among them. Every
contender is timed by the same harness (derain/bench/harness.py); the results are
printed as tables at the end, and written with --json, --markdown (the
benchmarks/RESULTS.md body) and --plot (PNG bar chart of the speed-up ratios).
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import os
import platform
import shlex
import sys

import torch

from derain.bench import PEERS, peers_install_command


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="reproduce the paper's runtime table and the op table, side by side with the peers",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10 images for Table IV and fewer repeats (about a minute)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, 1 repeat, no torch.compile: checks that everything runs (seconds)")
    p.add_argument("--only", nargs="+", default=None, metavar="SECTION",
                   help="sections to run: network, the op suites (composite, median, ssim, related, block), "
                        "overhead (µs per call on tiny tensors) and train_step (default: all)")
    p.add_argument("--images", type=int, default=None, help="Table IV images (default 100, --quick 10)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per contender in the op table")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="a contender whose first call takes longer is not repeated (default 10, --quick 3)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile in Table IV")
    p.add_argument("--sequential", dest="interleave", action="store_false",
                   help="time one contender after the other (default: timed calls round-robin over the "
                        "contenders of a comparison, fairer when the machine's load changes)")
    p.add_argument("--json", metavar="FILE", help="write all results as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write the report as Markdown (the RESULTS.md body)")
    p.add_argument("--plot", metavar="FILE.png", help="write a bar chart of the speed-up ratios (needs matplotlib)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", dest="devices", nargs="+", choices=["cpu", "cuda"], default=None,
                   help="where every section runs (default: cpu, and cuda when torch sees a GPU); on cuda "
                        "our ops run their Triton kernels and the CPU-only peers (OpenCV, scipy) are left out")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def sections() -> list[str]:
    from derain.bench import SUITES
    return ["network", *SUITES, "overhead", "train_step"]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str, dist: str) -> str:
    if importlib.util.find_spec(module) is None:
        return "not installed"
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "installed"


def machine_header() -> dict:
    import derain_kernels as dk

    cuda = "not available"
    if torch.cuda.is_available():
        cuda = f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    try:
        load = round(os.getloadavg()[0], 1)
    except (OSError, AttributeError):
        load = None
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": _cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average_1min": load,
            # set: peak MiB counts live allocations only (see docs/ops/bench.md, "Peak memory")
            "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
            "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(terse=True), "cuda": cuda, "backend": dk.backend_info(),
            "peers": {m: _version(m, d) for m, d in PEERS.items()}}


def _settings(args) -> dict:
    from derain.bench import network, overhead

    if args.smoke:
        ops = {"warmup": 1, "repeats": 1, "max_seconds": 1.0, "budget_s": 2.0}
    elif args.quick:
        ops = {"warmup": 1, "repeats": 3, "max_seconds": 2.0, "budget_s": 3.0}
    else:
        ops = {"warmup": 2, "repeats": 7, "max_seconds": 5.0, "budget_s": 10.0}
    if args.repeats is not None:
        ops["repeats"] = args.repeats
    if args.budget is not None:
        ops["budget_s"] = args.budget
    ops["interleave"] = args.interleave
    images = network.image_count(args.quick, args.smoke, args.images)
    return {"ops": ops,
            "network": {"warmup": 1 if args.smoke else 2, "repeats": images, "images": images,
                        "max_seconds": None, "budget_s": None,  # None: no limit (strict JSON)
                        "interleave": args.interleave},
            "train_step": {**ops, "budget_s": None, "max_seconds": 2.0 * ops["max_seconds"]},
            "overhead": {**dataclasses.asdict(overhead.plan_for(args.quick, args.smoke)), "threads": 1}}


def devices(args) -> list[str]:
    """The devices of this run: --device, else cpu plus cuda when torch sees a GPU."""
    chosen = getattr(args, "devices", None)
    if not chosen:
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in chosen and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device "
                         f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})")
    return [d for d in ("cpu", "cuda") if d in chosen]


def _suite_cases(name: str, args) -> tuple[list, str | None]:
    """(cases, reason they are not run or None). Suites may accept optional `smoke` and `device` keywords."""
    from derain.bench import network, overhead, train_step

    devs = devices(args)
    if name == "overhead":
        return [c for d in devs for c in overhead.cases(quick=args.quick, smoke=args.smoke, device=d)], None
    if name == "network":
        return network.cases(quick=args.quick, smoke=args.smoke, images=args.images, compile=args.compile,
                             devices=devs), None
    if name == "train_step":
        return train_step.cases(quick=args.quick, smoke=args.smoke, devices=devs), None
    cases_fn = importlib.import_module(f"derain.bench.{name}").cases
    params = inspect.signature(cases_fn).parameters
    reason = None
    kwargs = {"quick": args.quick}
    if args.smoke:
        kwargs["quick"] = True
        if "smoke" in params:
            kwargs["smoke"] = True
        else:
            reason = "not run in --smoke (the suite has no smoke sizes)"
    if "device" not in params:
        if "cpu" not in devs:
            raise ValueError(f"suite {name} runs on the CPU only")
        return cases_fn(**kwargs), reason
    return [c for d in devs for c in cases_fn(**kwargs, device=d)], reason


def collect(args, head: dict | None = None) -> dict:
    """Run the chosen sections; return the results dict that every renderer reads."""
    from derain.bench import network, overhead, report
    from derain.bench.harness import Settings, result_row, run_case

    chosen = args.only or sections()
    unknown = [s for s in chosen if s not in sections()]
    if unknown:
        raise ValueError(f"--only: unknown section(s) {unknown}; choose from {sections()}")
    chosen = [s for s in sections() if s in chosen]  # the report's order
    settings = _settings(args)
    planned = []  # (section, suite, case, reason not run)
    suite_errors = {}  # a suite that cannot build its cases is reported, the others still run
    for name in chosen:
        section = name if name in ("network", "overhead", "train_step") else "ops"
        try:
            cases, reason = _suite_cases(name, args)
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            suite_errors[name] = f"{type(exc).__name__}: {msg}"[:300]
            print(f"derain bench: suite {name} failed to build its cases: {suite_errors[name]}",
                  file=sys.stderr, flush=True)
            continue
        planned += [(section, name, c, reason) for c in cases]

    total = sum(len(c.contenders) for _, _, c, reason in planned if reason is None)
    bar = None
    if args.progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=total, unit="contender", file=sys.stderr, dynamic_ncols=True, leave=False)
        except ImportError:
            bar = None
    results_cases = []
    over_budget: dict = {}
    for section, suite, case, reason in planned:
        s = settings[section]
        if reason is not None:
            rows = [result_row(case, c, "skipped", reason) for c in case.contenders]
        else:
            if bar is not None:
                bar.set_description(f"{case.op} {case.mode} {case.shape}"[:48])

            def tick(row):
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"{row['impl'][:24]}: {row['status']}")
            def round_note(i, n):
                if bar is not None and n > 1:
                    bar.set_postfix_str(f"timed round {i}/{n}")
            if section == "overhead":
                rows = overhead.run_case(case, overhead.TimingPlan(s["warmup"], s["rounds"], s["calls"]),
                                         on_result=tick)
            else:
                max_seconds = math.inf if s["max_seconds"] is None else s["max_seconds"]
                rows = run_case(case, Settings(warmup=s["warmup"], repeats=s["repeats"], max_seconds=max_seconds,
                                               budget_s=s["budget_s"], interleave=s["interleave"]),
                                on_result=tick, over_budget=over_budget, on_round=round_note)
        results_cases.append(report.annotate({"section": section, "suite": suite, "op": case.op,
                                              "mode": case.mode, "shape": case.shape,
                                              "missing": list(case.missing), "rows": rows},
                                             judged=not args.smoke))
        if reason is None:
            line = report.case_line(results_cases[-1])
            bar.write(line, file=sys.stderr) if bar is not None else print(line, file=sys.stderr, flush=True)
    if bar is not None:
        bar.close()
    results = {"machine": head or machine_header(), "command": _command_line(args), "smoke": bool(args.smoke),
               "settings": settings,
               "suite_errors": suite_errors, "cases": results_cases,
               "rows": [dict(r, section=c["section"]) for c in results_cases for r in c["rows"]]}
    if "network" in chosen:
        results["parameters"] = network.parameter_counts()
    missing = report.missing_peers(results)
    results["missing_peers"] = {"modules": missing, "install": peers_install_command(missing) if missing else None}
    results["network_cross_check"] = report.network_cross_check(results)
    return results


def _strict_json(obj):
    """Non-finite floats become None (JSON has no NaN/Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict_json(v) for v in obj]
    return obj


def _command_line(args) -> str:
    """The command that reproduces this run, rebuilt from the parsed options."""
    argv = ["derain", "bench"]
    for flag in ("quick", "smoke"):
        if getattr(args, flag, False):
            argv.append(f"--{flag}")
    if getattr(args, "only", None):
        argv += ["--only", *args.only]
    for opt in ("images", "repeats", "budget", "threads", "json", "markdown", "plot"):
        if getattr(args, opt, None) is not None:
            argv += [f"--{opt}", str(getattr(args, opt))]
    if getattr(args, "devices", None):
        argv += ["--device", *args.devices]
    if not getattr(args, "compile", True):
        argv.append("--no-compile")
    if not getattr(args, "interleave", True):
        argv.append("--sequential")
    return shlex.join(argv)


def run(args) -> int:
    execute(args)
    return 0


def execute(args) -> dict:
    """`derain bench` with parsed arguments: prints the header, runs, prints the report, writes
    the --json / --markdown / --plot files; returns the results dict."""
    from derain.bench import report

    if args.threads:
        torch.set_num_threads(args.threads)
        if importlib.util.find_spec("cv2") is not None:  # the same thread count for OpenCV's peers
            import cv2
            cv2.setNumThreads(args.threads)
    devices(args)  # a bad --device fails before the run
    if args.plot:  # fail before the run, not after it
        if importlib.util.find_spec("matplotlib") is None:
            raise ValueError("--plot needs matplotlib, which is not installed (pip install matplotlib)")
    head = machine_header()
    preview = {"machine": head, "command": _command_line(args)}
    print("\n".join(report.header_lines(preview)), flush=True)
    warning = report.missing_peers_line(preview)
    if warning:  # before the run, so that it can be stopped and the peers installed
        print(warning, flush=True)
    results = collect(args, head)
    text = report.render_text(results)
    print("\n" + text.split("\n", len(report.header_lines(results)))[-1], end="")  # (the header was printed)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_strict_json(results), f, indent=1, default=str, allow_nan=False)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report.render_markdown(results))
    if args.plot:
        report.write_plot(results, args.plot)
    for path in (args.json, args.markdown, args.plot):
        if path:
            print(f"wrote {path}")
    return results
