"""Rendering of `derain bench` results: terminal tables, Markdown (the RESULTS.md body), a PNG plot.

All renderers read the same results dict that `--json` writes:
  {"machine": {...}, "command": str, "settings": {...}, "parameters": {...},
   "cases": [{"section", "op", "mode", "shape", "missing": [...], "rows": [row, ...]}, ...]}
A row is what derain.bench.harness.run_case returns, plus its goal (derain.bench.goals.judge:
"goal", "goal_min_ratio", "goal_met", "below_one_note").
"""
from __future__ import annotations

import math

from . import goals, peers_install_command
from .harness import shape_numel
from .network import PAPER_SECONDS, QUOTED, QUOTED_SOURCE

SECTION_TITLES = {
    "network": "Table IV reproduced: RainOerMeNet inference, 512×512 input",
    "ops": "Op table: our ops vs the peers, training and inference sizes",
    "overhead": ("Call overhead: µs per call on tiny tensors, one thread (ours, the bare torch.ops.derain call "
                 "it makes, the nearest torch op)"),
    "train_step": "One training step of the two-stage distillation (batch 8, 128×128)",
}


# ---------------------------------------------------------------- formatting helpers
def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms >= 10_000:
        return f"{ms / 1e3:.1f} s"
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def fmt_s(ms: float) -> str:
    """Milliseconds as seconds: 3 decimals, or 3 significant digits under 0.1 s (a GPU's 1.5 ms)."""
    sec = ms / 1e3
    return f"{sec:.3f}" if sec >= 0.1 else f"{sec:.3g}"


def fmt_ratio(r: float | None, approx: bool = False) -> str:
    if r is None or not math.isfinite(r):
        return "-"
    digits = 0 if r >= 100 else 1 if r >= 10 else 2
    return ("~" if approx else "") + f"{r:.{digits}f}×"


def fmt_mib(m: float | None) -> str:
    return "-" if m is None else f"{m:.1f}"


def _time_cell(row: dict) -> str:
    if row["status"] == "failed":
        return "failed"
    if row["median_ms"] is None:
        return "skipped"
    return fmt_ms(row["median_ms"])


def _spread_cell(row: dict) -> str:
    if row["median_ms"] is None:
        return "-"
    if row["repeats"] <= 1:
        return "(1 run)"
    return f"{fmt_ms(row['min_ms'])}..{fmt_ms(row['max_ms'])}"


def _note_cell(row: dict) -> str:
    parts = [p for p in (row.get("note"), row.get("reason")) if p]
    return "; ".join(parts)


def _ours_ratio_cell(row: dict) -> str:
    if row["ours"]:
        return "(ours)"
    return fmt_ratio(row["speedup_vs_ours"], approx=row["status"] == "skipped")


class Table:
    """A list of rows under named columns, rendered as aligned text or as Markdown."""

    def __init__(self, columns: list[str], right: set[str] | None = None):
        self.columns = columns
        self.right = right or set()
        self.rows: list[list[str]] = []

    def add(self, *cells) -> None:
        self.rows.append([str(c) for c in cells])

    def text(self) -> str:
        widths = [max([len(c)] + [len(r[i]) for r in self.rows]) for i, c in enumerate(self.columns)]

        def line(cells):
            out = [(c.rjust(w) if col in self.right else c.ljust(w))
                   for c, w, col in zip(cells, widths, self.columns)]
            return "  ".join(out).rstrip()
        sep = "  ".join("-" * w for w in widths)
        return "\n".join([line(self.columns), sep] + [line(r) for r in self.rows])

    def markdown(self) -> str:
        head = "| " + " | ".join(self.columns) + " |"
        align = "|" + "|".join("---:" if c in self.right else "---" for c in self.columns) + "|"
        body = ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in self.rows]
        return "\n".join([head, align] + body)


# ---------------------------------------------------------------- sections
def header_lines(results: dict) -> list[str]:
    m = results["machine"]
    b = m.get("backend", {})
    lines = [
        f"date: {m.get('date', '?')}",
        f"machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch threads {m.get('threads', '?')}"
        + ("" if m.get("load_average_1min") is None else
           f", 1-min load average {m['load_average_1min']} at the start"
           + (" (other processes were competing for the cores)" if m["load_average_1min"] >= 1.0 else ""))
        + ("" if not m.get("malloc_mmap_threshold") else
           f"; glibc's mmap threshold fixed at {m['malloc_mmap_threshold']} B (MALLOC_MMAP_THRESHOLD_): peak MiB "
           "counts live allocations, and calls that allocate pay fresh page faults"),
        f"torch {m.get('torch', '?')}, python {m.get('python', '?')}, {m.get('platform', '')}".rstrip(", "),
        f"derain_kernels backend: CPU kernels {b.get('cpu_kernels', '?')} ({len(b.get('cpu_ops', []))} ops), "
        f"build {b.get('build', {}).get('flags', '?') if isinstance(b.get('build'), dict) else '?'}; "
        f"triton {b.get('triton', '-')} (interpret: {b.get('triton_interpret', '-')}); "
        f"CUDA: {m.get('cuda', 'not available')}",
        "peers: " + ", ".join(f"{k} {v}" for k, v in m.get("peers", {}).items()),
        f"command: {results.get('command', 'derain bench')}",
    ]
    return lines


def missing_peers_line(results: dict) -> str | None:
    """One loud line when peers are not installed (None when all are)."""
    missing = missing_peers(results)
    if not missing:
        return None
    return (f"WARNING: peers not installed: {', '.join(missing)}; the op table and the training step "
            f"leave out their rows. Install them: {peers_install_command(missing)}")


def _cases(results: dict, section: str) -> list[dict]:
    """The section's cases grouped by op, then mode, then shape (small to large), else in run order."""
    cases = [c for c in results["cases"] if c["section"] == section]
    ops = {op: i for i, op in reversed(list(enumerate(c["op"] for c in cases)))}
    modes = {m: i for i, m in reversed(list(enumerate(c["mode"] for c in cases)))}

    def key(item):
        i, c = item
        return ops[c["op"]], modes[c["mode"]], shape_numel(c["shape"]) or 0, i
    return [c for _, c in sorted(enumerate(cases), key=key)]


def row_ratio(case: dict, row: dict) -> float | None:
    """The "ours faster" ratio the report shows for `row`: Table IV from means, else from medians."""
    if row["ours"]:
        return None
    if case.get("section") == "network":
        ours = next((r for r in case["rows"] if r["ours"] and r["mean_ms"]), None)
        if ours is None or not row.get("mean_ms"):
            return None
        return row["mean_ms"] / ours["mean_ms"]
    return row.get("speedup_vs_ours")


SMOKE_GOALS = "goals are not judged in --smoke (tiny sizes, one timed call each)"


def row_goal(case: dict, row: dict, judged: bool = True) -> dict:
    """derain.bench.goals.judge for one row of a results case (judged=False: the goal only,
    no verdict, as in --smoke runs)."""
    if row["ours"]:
        return {"goal": None, "goal_min_ratio": None, "goal_met": None, "below_one_note": None}
    ratio = row_ratio(case, row) if judged else None
    return goals.judge(case["op"], case["mode"], row["impl"], row.get("device", "cpu"), ratio)


def annotate(case: dict, judged: bool = True) -> dict:
    """Adds each row's goal fields (row_goal) to a results case, in place; returns it."""
    for row in case["rows"]:
        row.update(row_goal(case, row, judged))
    return case


def _judged(results: dict) -> bool:
    return not results.get("smoke", False)


def _goal_cell(case: dict, row: dict, judged: bool = True) -> str:
    g = row_goal(case, row, judged)
    if row["ours"] or g["goal_min_ratio"] is None:
        return ""
    cell = goals.short(g["goal_min_ratio"])
    return cell + (" (below)" if g["goal_met"] is False else "")


def goal_lines(results: dict, sections=("network", "ops", "train_step")) -> list[str]:
    """Rows below 1× grouped with their reason, then the other rows that missed their goal."""
    if not _judged(results):
        return [SMOKE_GOALS[0].upper() + SMOKE_GOALS[1:] + "."]
    below: dict = {}
    missed = []
    for section in sections:
        for case in _cases(results, section):
            for r in case["rows"]:
                g = row_goal(case, r)
                ratio = row_ratio(case, r)
                where = f"{case['shape']}{'' if r.get('device', 'cpu') == 'cpu' else ' ' + r['device']}"
                if g["below_one_note"]:
                    key = (case["op"], case["mode"], r["impl"], g["below_one_note"])
                    below.setdefault(key, []).append(f"{where} {fmt_ratio(ratio)}")
                elif g["goal_met"] is False:
                    missed.append(f"{case['op']} {case['mode']} {where} vs {r['impl']}: {fmt_ratio(ratio)} "
                                  f"(goal {goals.short(g['goal_min_ratio'])})")
    out = []
    if below:
        out.append("Rows below 1× (that contender was faster than ours), and why:")
        out += [f"- {op} {mode} vs {impl} ({'; '.join(where)}): {note}"
                for (op, mode, impl, note), where in below.items()]
    if missed:
        out.append("Below their goal in this run (though ours is faster):")
        out += [f"- {m}" for m in missed]
    return out


def network_cross_check(results: dict) -> dict | None:
    """The fused network appears in Table IV and in the op table (block suite): the two figures
    side by side, with what each one measures. None unless both were measured on the CPU."""
    t4 = next(((c, r) for c in _cases(results, "network") for r in c["rows"]
               if r["ours"] and r.get("device", "cpu") == "cpu" and r["mean_ms"]), None)
    op = next(((c, r) for c in _cases(results, "ops") if c["op"] == "rain_oer_me network" for r in c["rows"]
               if r["ours"] and r.get("device", "cpu") == "cpu" and r["median_ms"]), None)
    if t4 is None or op is None or t4[0]["shape"] != op[0]["shape"]:
        return None
    shape = t4[0]["shape"].replace("x", "×")
    t4, op = t4[1], op[1]
    load = results.get("machine", {}).get("load_average_1min")
    diff = 100.0 * (t4["median_ms"] / op["median_ms"] - 1.0)
    text = (f"The fused network is timed twice, on the same call (model.fused() on one {shape} image, "
            f"no autograd): Table IV reports the mean over {t4['repeats']} distinct images, as the paper does "
            f"({fmt_s(t4['mean_ms'])} s; median {fmt_s(t4['median_ms'])} s), the op table the median of "
            f"{op['repeats']} calls on one image ({fmt_ms(op['median_ms'])} ms). Compare medians with medians: "
            f"they differ by {diff:+.0f} %. The mean counts every call that other processes slowed"
            + ("" if load is None else f" (1-min load average {load} at the start)")
            + ", the median does not; the two sections also run minutes apart.")
    return {"table_iv_mean_ms": t4["mean_ms"], "table_iv_median_ms": t4["median_ms"], "table_iv_images": t4["repeats"],
            "op_table_median_ms": op["median_ms"], "op_table_repeats": op["repeats"],
            "median_difference_percent": diff, "text": text}


def network_tables(results: dict) -> tuple[list[str], list[Table], list[str]]:
    """(lines before, tables, lines after) of the Table IV section."""
    p = results.get("parameters") or {}
    before = []
    if p:
        before.append(f"Parameters of G: {p['G_weights']:,} convolution weights, {p['G_with_biases']:,} with biases "
                      f"(paper: {p['paper_G']:,} = weights only); the detail block g (training only) adds "
                      f"{p['g_weights']:,} weights, {p['g_with_biases']:,} with biases.")
    settings = results.get("settings", {}).get("network", {})
    if settings:
        before.append(f"Timing: mean (ratios from means; median, min..max) seconds per image over {settings.get('images')} "
                      f"pre-generated random images, after {settings.get('warmup')} warm-up call(s); "
                      f"random weights; torch.inference_mode.")
    before.append("Goal: ours faster than every eager and compiled variant (> 1× in \"ours faster\"). The paper's "
                  "times (last column) were measured on another machine: compare the ratios, not the seconds.")
    t = Table(["variant", "device", "images", "mean s", "median s", "min..max s", "peak MiB",
               "ours faster", "vs eager contiguous", "setup s", "paper s (other machine)"],
              right={"images", "mean s", "median s", "peak MiB", "ours faster", "vs eager contiguous",
                     "setup s", "paper s (other machine)"})
    after = []
    for case in _cases(results, "network"):
        rows = case["rows"]
        base = next((r for r in rows if r["impl"] == "eager contiguous" and r["mean_ms"]), None)
        ours = next((r for r in rows if r["ours"] and r["mean_ms"]), None)
        for r in rows:
            if r["mean_ms"] is None:
                t.add(r["impl"], r["device"], "-", r["status"], "-", "-", "-", "-", "-",
                      "-" if r["setup_s"] is None else f"{r['setup_s']:.1f}", "")
                after.append(f"{r['impl']} ({r['device']}): {r['status']}: {r['reason']}")
                continue
            vs_eager = base["mean_ms"] / r["mean_ms"] if base and r is not base else None
            t.add(r["impl"], r["device"], str(r["repeats"]), fmt_s(r["mean_ms"]),
                  fmt_s(r["median_ms"]), f"{fmt_s(r['min_ms'])}..{fmt_s(r['max_ms'])}",
                  fmt_mib(r["peak_extra_mib"]),
                  "(ours)" if r["ours"] else fmt_ratio(r["mean_ms"] / ours["mean_ms"] if ours else None),
                  "(baseline)" if r is base else fmt_ratio(vs_eager),
                  "-" if r["setup_s"] is None else f"{r['setup_s']:.1f}",
                  f"{PAPER_SECONDS.get(r['device'].split(':')[0], float('nan')):.2f}")
        after += [f"{case['op']} ({rows[0]['device'] if rows else ''}): {m}" for m in case["missing"]]
    q = Table(["method (quoted)", "parameters", "CPU s", "GPU s"],
              right={"parameters", "CPU s", "GPU s"})
    for name, params, cpu, gpu in QUOTED:
        q.add(name, "-" if params is None else f"{params:,}", f"{cpu:.2f}", "-" if gpu is None else f"{gpu:.2f}")
    return before, [t, q], after


def op_table(results: dict, section: str = "ops") -> tuple[Table, list[str]]:
    t = Table(["op", "mode", "shape", "impl", "median ms", "min..max ms", "peak MiB", "ours faster", "goal", "note"],
              right={"median ms", "min..max ms", "peak MiB", "ours faster"})
    missing = []
    prev = (None, None)
    for case in _cases(results, section):
        first = True
        device = case["rows"][0]["device"] if case["rows"] else "cpu"
        shape = case["shape"] if device == "cpu" else f"{case['shape']} {device}"
        op = "" if prev[0] == case["op"] else case["op"]
        mode = "" if prev == (case["op"], case["mode"]) else case["mode"]
        prev = (case["op"], case["mode"])
        for r in case["rows"]:
            key = (op, mode, shape) if first else ("", "", "")
            t.add(*key, r["impl"], _time_cell(r), _spread_cell(r), fmt_mib(r["peak_extra_mib"]),
                  _ours_ratio_cell(r), _goal_cell(case, r, _judged(results)), _note_cell(r))
            first = False
        missing += [f"{case['op']} {case['mode']} {case['shape']}: {m}" for m in case["missing"]]
    return t, missing


def case_line(case: dict) -> str:
    """One line per finished case, written while the run goes on."""
    if case.get("section") == "overhead":
        cells = [f"{r['impl']} " + ("failed" if r.get("us_per_call") is None else f"{r['us_per_call']:.1f} µs")
                 for r in case["rows"]]
        ratio = _ours_over(case, goals.OVERHEAD_BARE)
        tail = "" if ratio is None else f" (ours / bare {fmt_ratio(ratio)})"
        return f"{case['op']} {case['mode']} {case['shape']}: " + "; ".join(cells) + tail
    cells = []
    for r in case["rows"]:
        if r["median_ms"] is None:
            cells.append(f"{r['impl']} {r['status']}")
        else:
            ratio = "" if r["ours"] or r["speedup_vs_ours"] is None else f" ({fmt_ratio(r['speedup_vs_ours'])})"
            t = fmt_ms(r["median_ms"])
            cells.append(f"{r['impl']} {t}{'' if t.endswith(' s') else ' ms'}{ratio}")
    return f"{case['op']} {case['mode']} {case['shape']}: " + "; ".join(cells)


def missing_peers(results: dict) -> list[str]:
    return [k for k, v in results["machine"].get("peers", {}).items() if v == "not installed"]


def ratio_summary(results: dict) -> list[tuple[str, float]]:
    """(label, ours-faster ratio) for every measured peer row (the bars of --plot)."""
    out = []
    for case in [c for section in ("network", "ops", "train_step") for c in _cases(results, section)]:
        for r in case["rows"]:
            if not r["ours"] and r["speedup_vs_ours"] is not None:
                out.append((f"{case['op']} {case['mode']} {case['shape']} vs {r['impl']}", r["speedup_vs_ours"]))
    return out


# ---------------------------------------------------------------- call overhead
def _ours_over(case: dict, impl: str) -> float | None:
    """ours' µs per call over `impl`'s in an overhead case (None if either is unmeasured)."""
    by = {r["impl"]: r for r in case["rows"]}
    ours = next((r for r in case["rows"] if r["ours"]), None)
    other = by.get(impl)
    if not ours or not other or not ours.get("us_per_call") or not other.get("us_per_call"):
        return None
    return ours["us_per_call"] / other["us_per_call"]


def _us(row: dict | None) -> str:
    if row is None:
        return "-"
    if row.get("us_per_call") is None:
        return row["status"]
    v = row["us_per_call"]
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def overhead_goal_cell(case: dict, judged: bool = True) -> str:
    """The bare row's goal as a bound on ours / bare ("≤ 2×"; "(missed)" when this run missed it)."""
    bare = next((r for r in case["rows"] if r["impl"] == goals.OVERHEAD_BARE), None)
    if bare is None:
        return ""
    g = row_goal(case, bare, judged)
    if g["goal_min_ratio"] is None:
        return "-"
    return f"≤ {1 / g['goal_min_ratio']:g}×" + (" (missed)" if g["goal_met"] is False else "")


def overhead_table(results: dict, first: str = "op") -> tuple[Table, list[str]]:
    """(the call-overhead table, lines for failed rows). `first`: the first column's title."""
    t = Table([first, "grad", "shape", "ours µs", "bare µs", "ours / bare", "goal", "torch µs", "ours / torch",
               "bare call", "nearest torch op"],
              right={"ours µs", "bare µs", "ours / bare", "torch µs", "ours / torch"})
    failed = []
    judged = _judged(results)
    for case in _cases(results, "overhead"):
        by = {r["impl"]: r for r in case["rows"]}
        ours = next((r for r in case["rows"] if r["ours"]), None)
        bare, near = by.get(goals.OVERHEAD_BARE), by.get(goals.OVERHEAD_TORCH)
        device = ours["device"] if ours else "cpu"
        shape = case["shape"] if device == "cpu" else f"{case['shape']} {device}"
        grad = "yes" if case["mode"] == goals.OVERHEAD_MODES[1] else "no"
        t.add(case["op"], grad, shape, _us(ours), _us(bare), fmt_ratio(_ours_over(case, goals.OVERHEAD_BARE)),
              overhead_goal_cell(case, judged), _us(near), fmt_ratio(_ours_over(case, goals.OVERHEAD_TORCH)),
              bare["note"] if bare else "-", near["note"] if near else "-")
        failed += [f"{case['op']} {case['mode']} {shape}: {r['impl']} failed: {r['reason']}"
                   for r in case["rows"] if r["status"] == "failed"]
    return t, failed


def overhead_lines(results: dict) -> list[str]:
    """How the section times, then the ops whose call missed the goal (none in --smoke)."""
    plan = results.get("settings", {}).get("overhead", {})
    out = [f"Timing: after {plan.get('warmup', '?')} warm-up calls, {plan.get('rounds', '?')} rounds of "
           f"{plan.get('calls', '?')} calls of each contender in turn; µs per call of the fastest round, one "
           "torch thread. grad yes: the first image input requires grad and grad mode is on (the forward "
           "records the autograd graph; no backward). bare call = the torch.ops.derain call(s) that our "
           "function makes, with its arguments, called directly; ours / bare = what our Python path "
           f"multiplies a call by (goal ≤ {goals.OVERHEAD_MAX_COST:g}×)."]
    if not _judged(results):
        return out + [SMOKE_GOALS[0].upper() + SMOKE_GOALS[1:] + "."]
    missed = []
    for case in _cases(results, "overhead"):
        bare = next((r for r in case["rows"] if r["impl"] == goals.OVERHEAD_BARE), None)
        if bare is not None and row_goal(case, bare)["goal_met"] is False:
            device = bare.get("device", "cpu")
            missed.append(f"{case['op']} {case['mode']}{'' if device == 'cpu' else ' ' + device}: "
                          f"{fmt_ratio(_ours_over(case, goals.OVERHEAD_BARE))} ({_us(next(r for r in case['rows'] if r['ours']))}"
                          f" vs {_us(bare)} µs)")
    if missed:
        out.append(f"Ours more than {goals.OVERHEAD_MAX_COST:g}× the bare dispatcher call (goal missed):")
        out += [f"- {m}" for m in missed]
    elif _cases(results, "overhead"):
        out.append(f"Every measured op is within {goals.OVERHEAD_MAX_COST:g}× its bare dispatcher call.")
    return out


# ---------------------------------------------------------------- whole reports
LEGEND = ("ours faster = contender's median / ours' median (Table IV: means; > 1: ours is faster); "
          "goal = the ratio the comparison should reach (≥ 1× where none was set: at least as fast as "
          "the peer; \"(below)\" when this run missed it); peak MiB = peak extra memory of one call; "
          "~ = from a single over-budget call")


def render_text(results: dict) -> str:
    parts = header_lines(results)
    warning = missing_peers_line(results)
    if warning:
        parts.append(warning)
    if _cases(results, "network"):
        before, (t, q), after = network_tables(results)
        parts += ["", "== " + SECTION_TITLES["network"], *before, t.text(), *after]
        parts += goal_lines(results, ("network",))
        cross = network_cross_check(results)
        if cross is not None:
            parts.append(cross["text"])
        parts += ["", f"Peers' rows, {QUOTED_SOURCE}:", q.text()]
    for section in ("ops", "overhead", "train_step"):
        if section == "overhead":
            if _cases(results, section):
                t, failed = overhead_table(results)
                parts += ["", "== " + SECTION_TITLES[section], t.text()]
                parts += [f"  {line}" for line in failed + overhead_lines(results)]
            continue
        if _cases(results, section) or (section == "ops" and results.get("suite_errors")):
            t, missing = op_table(results, section)
            parts += ["", "== " + SECTION_TITLES[section], t.text()]
            parts += [f"  not measured: {m}" for m in missing]
            if section == "ops":
                parts += [f"  suite {k} failed: {v}" for k, v in results.get("suite_errors", {}).items()]
            if section == "ops" and missing_peers(results):
                parts.append("  peers not installed: " + ", ".join(missing_peers(results))
                             + f" ({peers_install_command(missing_peers(results))})")
            parts += [f"  {line}" for line in goal_lines(results, (section,))]
    if any(_cases(results, section) for section in ("network", "ops", "train_step")):
        parts += ["", LEGEND]
    return "\n".join(parts) + "\n"


def _md_block(lines: list[str]) -> list[str]:
    """goal_lines as Markdown: a blank line before each heading line and its list."""
    out = []
    for line in lines:
        out += [line] if line.startswith("- ") else ["", line, ""]
    return out


def render_markdown(results: dict) -> str:
    m = results["machine"]
    out = ["# `derain bench` results", "",
           f"Produced by `{results.get('command', 'derain bench')}` on {m.get('date', '?')} "
           "(after `pip install -r requirements.txt && pip install --no-build-isolation -e \".[bench]\"`; "
           "the peers come from the `bench` extra). "
           "Timings on a shared machine vary by ±10–15 % between runs: compare the ratios measured "
           "side by side in one run.", ""]
    warning = missing_peers_line(results)
    if warning:
        out += [f"**{warning}**", ""]
    out += [f"- {line}" for line in header_lines(results)[1:-1]]
    out.append("")
    interleaved = results.get("settings", {}).get("ops", {}).get("interleave", True)
    out.append("Timing: the same harness for every contender (derain/bench/harness.py): warm-up calls, then "
               + ("timed calls round-robin over the contenders of each comparison (one call of each per "
                  "round, so that load changes hit all alike)" if interleaved else "timed calls, one contender "
                  "after the other (--sequential)")
               + "; median and min..max in ms; peak MiB = peak extra resident memory (CPU) or "
               "allocated memory (CUDA) of one call; ours faster = contender's median / ours' median "
               "(> 1: ours is faster; ~ = estimate from a single over-budget call); goal = the ratio the "
               "comparison should reach (≥ 1× where none was set: at least as fast as the peer; \"(below)\" "
               "when this run missed it). Rows below 1× are listed under each table with the reason.")
    if _cases(results, "network"):
        before, (t, q), after = network_tables(results)
        out += ["", "## " + SECTION_TITLES["network"], "", *before, "", t.markdown(), ""]
        out += [f"- {a}" for a in after]
        out += _md_block(goal_lines(results, ("network",)))
        cross = network_cross_check(results)
        if cross is not None:
            out += ["", cross["text"]]
        out += ["", f"Peers' rows, {QUOTED_SOURCE}:", "", q.markdown()]
    for section in ("ops", "overhead", "train_step"):
        if section == "overhead":
            if _cases(results, section):
                t, failed = overhead_table(results)
                out += ["", "## " + SECTION_TITLES[section], "", t.markdown(), ""]
                out += [f"- {line}" for line in failed]
                out += _md_block(overhead_lines(results))
            continue
        if _cases(results, section) or (section == "ops" and results.get("suite_errors")):
            t, missing = op_table(results, section)
            out += ["", "## " + SECTION_TITLES[section], "", t.markdown()]
            if section == "ops":
                missing = missing + [f"suite {k} failed: {v}" for k, v in results.get("suite_errors", {}).items()]
            if missing:
                out += ["", "Not measured:", ""] + [f"- {x}" for x in missing]
            if section == "ops" and missing_peers(results):
                out += ["", "Peers not installed: " + ", ".join(missing_peers(results))
                        + f" (`{peers_install_command(missing_peers(results))}`)."]
            out += _md_block(goal_lines(results, (section,)))
    return "\n".join(out) + "\n"


def write_plot(results: dict, path: str) -> None:
    """Horizontal bar chart (log scale) of every 'ours faster' ratio."""
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    bars = ratio_summary(results)
    height = max(2.0, 0.28 * len(bars) + 1.2)
    fig, ax = plt.subplots(figsize=(11, height))
    if bars:
        labels, values = zip(*bars)
        ys = range(len(bars))
        ax.barh(ys, [v - 1.0 for v in values], left=1.0,
                color=["tab:green" if v >= 1 else "tab:red" for v in values])
        ax.set_yticks(list(ys), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.axvline(1.0, color="black", linewidth=0.8)
        for y, v in zip(ys, values):
            ax.text(v, y, f" {v:.2f}×", va="center", fontsize=7)
    else:
        ax.text(0.5, 0.5, "no ratios measured", ha="center", va="center", transform=ax.transAxes)
    m = results["machine"]
    ax.set_xlabel("ours faster by (contender median / ours median, log scale)")
    ax.set_title(f"derain bench — {m.get('cpu', '?')}, {m.get('threads', '?')} threads, torch {m.get('torch', '?')}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
