"""`derain bench`: the harness, the report renderers and a tiny end-to-end run (--smoke)."""
from __future__ import annotations

import json
import sys
import time
import types

import pytest
import torch

from derain.bench import PEERS, goals, harness, network, peers_install_command, report, train_step
from derain.bench.harness import Case, Contender, Settings, measure, run_case
from derain.cli import main


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


class Counter:
    def __init__(self, seconds: float = 0.0):
        self.calls = 0
        self.seconds = seconds

    def __call__(self):
        self.calls += 1
        if self.seconds:
            time.sleep(self.seconds)


# ---------------------------------------------------------------- harness
def test_measure_counts_calls_and_reports_spread():
    fn = Counter()
    t = measure(fn, warmup=3, repeats=5, memory=True)
    # warm-up calls (the first doubles as the budget check), timed calls, one memory call
    assert fn.calls == 3 + 5 + 1
    assert t.repeats == 5 and t.skipped is None
    assert t.min_ms <= t.median_ms <= t.max_ms
    assert t.min_ms <= t.mean_ms <= t.max_ms


def test_measure_without_memory_makes_no_extra_call():
    fn = Counter()
    t = measure(fn, warmup=1, repeats=2, memory=False)
    assert fn.calls == 1 + 2 and t.peak_mib is None


def test_measure_stops_after_max_seconds():
    fn = Counter(0.02)
    t = measure(fn, warmup=1, repeats=50, max_seconds=0.05, memory=False)
    assert 1 <= t.repeats < 50


def test_slow_contender_gets_no_extra_warmup_or_memory_call():
    fn = Counter(0.02)
    t = measure(fn, warmup=3, repeats=5, max_seconds=0.05, memory=True)
    # 0.02 s × (3 + 5) planned calls > 0.05 s: the first call is the only warm-up and gives the memory
    assert fn.calls == 1 + t.repeats


def test_measure_over_budget_is_called_once():
    fn = Counter(0.05)
    t = measure(fn, warmup=2, repeats=5, budget_s=0.01)
    assert fn.calls == 1
    assert t.repeats == 1 and t.skipped and "budget" in t.skipped
    assert t.median_ms >= 50


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS via /proc is Linux-only")
def test_peak_extra_memory_sees_a_large_allocation():
    def alloc():
        x = torch.ones(32 * 2**20 // 4)  # 32 MiB, written
        return float(x[-1])

    mib = harness.peak_extra_mib(alloc)
    if mib is None:
        pytest.skip("/proc/self/clear_refs not writable here")
    assert 28 <= mib <= 200
    assert harness.peak_extra_mib(lambda: None) < 16


def test_shape_numel():
    assert harness.shape_numel("8x3x128x128") == 8 * 3 * 128 * 128
    assert harness.shape_numel("1×3×512×512 k=31") == 3 * 512 * 512
    assert harness.shape_numel("k=31") is None


def test_run_case_rows_ratios_and_failures():
    ours, peer = Counter(), Counter(0.002)

    def broken():
        raise RuntimeError("no kernel for this\nsecond line")

    case = Case("op", "forward", "2x2", [
        Contender("ours", lambda: ours, ours=True),
        Contender("peer", lambda: peer),
        Contender("broken", broken),
        Contender("too slow", lambda: Counter(), expected_s=100.0),
    ], missing=["kornia not installed"])
    seen = []
    rows = run_case(case, Settings(warmup=1, repeats=3, memory=False, budget_s=10.0), on_result=seen.append)
    assert [r["impl"] for r in rows] == ["ours", "peer", "broken", "too slow"]
    assert sorted(r["impl"] for r in seen) == sorted(r["impl"] for r in rows)  # each reported once
    r_ours, r_peer, r_broken, r_slow = rows
    assert r_ours["status"] == r_peer["status"] == "ok" and r_ours["repeats"] == 3
    assert r_ours["speedup_vs_ours"] is None
    assert r_peer["speedup_vs_ours"] == pytest.approx(r_peer["median_ms"] / r_ours["median_ms"])
    assert r_broken["status"] == "failed" and r_broken["reason"] == "RuntimeError: no kernel for this"
    assert r_slow["status"] == "skipped" and "budget" in r_slow["reason"] and r_slow["median_ms"] is None


def test_run_case_interleaves_timed_calls_and_survives_a_late_failure():
    log = []

    def contender(name, fail_at=None):
        calls = [0]

        def fn():
            calls[0] += 1
            log.append(name)
            if fail_at is not None and calls[0] == fail_at:
                raise ValueError(f"{name} broke")
        return Contender(name, lambda: fn, ours=name == "a")

    case = Case("op", "fwd", "4x4", [contender("a"), contender("b"), contender("c", fail_at=4)])
    rows = run_case(case, Settings(warmup=2, repeats=4, memory=False, budget_s=None))
    # warm-ups one contender after the other, then timed calls round-robin
    assert log[:6] == ["a", "a", "b", "b", "c", "c"]
    assert log[6:12] == ["a", "b", "c", "a", "b", "c"]
    by = {r["impl"]: r for r in rows}
    assert by["a"]["repeats"] == by["b"]["repeats"] == 4
    assert by["c"]["status"] == "failed" and by["c"]["reason"] == "ValueError: c broke"
    assert by["b"]["speedup_vs_ours"] == pytest.approx(by["b"]["median_ms"] / by["a"]["median_ms"])

    log.clear()
    run_case(Case("op", "fwd", "4x4", [contender("a"), contender("b")]),
             Settings(warmup=1, repeats=2, memory=False, interleave=False))
    assert log == ["a", "a", "a", "b", "b", "b"]


def test_run_case_skips_larger_shapes_after_going_over_budget():
    slow_small, slow_big = Counter(0.03), Counter(0.03)
    over: dict = {}
    s = Settings(warmup=1, repeats=3, memory=False, budget_s=0.01)
    small = run_case(Case("op", "fwd", "1x1x8x8", [Contender("slow", lambda: slow_small)]), s, over_budget=over)
    big = run_case(Case("op", "fwd", "1x1x16x16", [Contender("slow", lambda: slow_big)]), s, over_budget=over)
    assert small[0]["status"] == "skipped" and small[0]["repeats"] == 1 and slow_small.calls == 1
    assert big[0]["status"] == "skipped" and "1x1x8x8" in big[0]["reason"] and slow_big.calls == 0


# ---------------------------------------------------------------- sections
def test_parameter_counts_match_the_paper():
    p = network.parameter_counts()
    assert p["G_weights"] == p["paper_G"] == 51_552
    assert p["G_with_biases"] == 51_843
    assert (p["g_weights"], p["g_with_biases"]) == (3_168, 3_203)
    model = network.RainOerMeNet()
    if hasattr(model, "parameter_count"):  # the model's own count (derain/models) agrees
        own = model.parameter_count()
        assert (own["G"]["weights"], own["G"]["with_biases"]) == (p["G_weights"], p["G_with_biases"])


def test_network_compile_failure_is_a_row(monkeypatch):
    def no_compile(*a, **k):
        raise RuntimeError("inductor unavailable")

    monkeypatch.setattr(torch, "compile", no_compile)
    case = network._case("cpu", (1, 3, 16, 16), 1, compile=True, smoke=False)
    rows = run_case(case, Settings(warmup=1, repeats=1, memory=False))
    by = {r["impl"]: r for r in rows}
    assert by["torch.compile (eager contiguous)"]["status"] == "failed"
    assert "inductor unavailable" in by["torch.compile (eager contiguous)"]["reason"]
    assert by["eager contiguous"]["status"] == "ok"


def test_block_suite_compiles_in_setup_not_in_the_timed_calls(monkeypatch):
    # torch.compile compiles on its first call: that call must happen in make() (reported as
    # setup_s), or the harness's first timed call (the budget check) reports the compilation
    # as the inference time (a slow compile then reads as "one call took N s > budget").
    from derain.bench import block

    calls = []

    def fake_compile(fn, *a, **k):
        def wrapped(*args, **kw):
            calls.append(1)
            return fn(*args, **kw)
        return wrapped

    monkeypatch.setattr(torch, "compile", fake_compile)
    contenders = block.network_contenders(with_compile=True, shape=(1, 3, 12, 10))
    compiled = [c for c in contenders if c.name.startswith("torch.compile")]
    assert len(compiled) == 2
    for c in compiled:
        before = len(calls)
        fn = c.make()
        assert len(calls) == before + 1  # the compiling call ran in make()
        fn()
        assert len(calls) == before + 2
        assert "setup" in c.note


def test_network_contenders_compute_the_same_image():
    case = network._case("cpu", (1, 3, 24, 24), 1, compile=False, smoke=True)
    outs = {c.name: c.make()() for c in case.contenders}
    ref = outs["eager contiguous"]
    for name, y in outs.items():
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5, msg=name)


def test_eager_network_is_plain_pytorch_with_the_same_weights():
    torch.manual_seed(1)
    model = network.RainOerMeNet()
    for p in model.parameters():  # weights large enough that every block matters
        p.data.normal_(0, 0.2)
    types_before = [type(m) for m in model.modules()]
    eager = network.eager_network(model)
    blocks = [m for m in eager.modules() if isinstance(m, network.EagerSelfCorrectingBlock)]
    assert len(blocks) == 6
    assert [type(m) for m in model.modules()] == types_before  # the model itself is untouched
    assert eager.state_dict().keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(eager.state_dict()[k], v), k
    x = torch.rand(2, 3, 20, 23)
    with torch.no_grad():
        torch.testing.assert_close(eager(x), model(x), rtol=1e-4, atol=1e-5)
        r, y, r_e, y_e = eager.forward_train(x)
        torch.testing.assert_close(y_e, model.forward_train(x)[3], rtol=1e-4, atol=1e-5)


def test_train_step_contenders_run_and_learn():
    torch.set_num_threads(1)
    (case,) = train_step.cases(smoke=True)
    assert case.contenders, case.missing
    for c in case.contenders:
        step = c.make()
        first = float(step())
        assert 0.0 <= first <= 2.01 and torch.isfinite(torch.tensor(first)), c.name
        assert float(step()) != first, c.name  # Adam moved the weights


# ---------------------------------------------------------------- report
def _row(impl, median, ours=False, status="ok", reason="", ratio=None, repeats=3):
    return {"op": "op", "mode": "forward", "shape": "1x3x8x8", "impl": impl, "ours": ours, "note": "",
            "device": "cpu", "status": status, "reason": reason, "median_ms": median, "mean_ms": median,
            "min_ms": median, "max_ms": median, "repeats": repeats, "peak_extra_mib": 1.5, "setup_s": 0.0,
            "speedup_vs_ours": ratio}


def test_report_marks_skipped_failed_and_missing():
    results = {"machine": {"cpu": "test cpu", "threads": 1, "torch": "x"}, "command": "derain bench",
               "cases": [{"section": "ops", "op": "op", "mode": "forward", "shape": "1x3x8x8",
                          "missing": ["kornia not installed"],
                          "rows": [_row("ours", 2.0, ours=True), _row("peer", 8.0, ratio=4.0),
                                   _row("slow", 30000.0, status="skipped", reason="over budget", ratio=15000.0,
                                        repeats=1),
                                   _row("bad", None, status="failed", reason="ValueError: nope")]}]}
    text = report.render_text(results)
    md = report.render_markdown(results)
    for out in (text, md):
        assert "4.00×" in out and "~15000×" in out and "30.0 s" in out and "(1 run)" in out
        assert "failed" in out and "ValueError: nope" in out and "kornia not installed" in out
    assert report.ratio_summary(results) == [("op forward 1x3x8x8 vs peer", 4.0),
                                             ("op forward 1x3x8x8 vs slow", 15000.0)]


# ---------------------------------------------------------------- peers, goals, the two network figures
def _results(*cases, peers=None, load=0.3):
    return {"machine": {"cpu": "test cpu", "threads": 2, "torch": "x", "load_average_1min": load,
                        "peers": peers or {m: "1.0" for m in PEERS}},
            "command": "derain bench", "settings": {"network": {"images": 100, "warmup": 2}},
            "cases": [dict(c) for c in cases]}


def _case(section, op, mode, shape, rows):
    rows = [dict(r, op=op, mode=mode, shape=shape) for r in rows]
    return {"section": section, "op": op, "mode": mode, "shape": shape, "missing": [], "rows": rows}


def test_bench_extra_installs_every_peer_the_bench_imports():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    sources = [*(root / "derain" / "bench").glob("*.py"), root / "derain" / "commands" / "bench.py"]
    imported = {m for f in sources for m in re.findall(r'find_spec\("(\w+)', f.read_text())}
    assert imported - {"matplotlib"} and imported - {"matplotlib"} <= set(PEERS), imported
    extra = re.search(r'"bench":\s*\[([^\]]*)\]', (root / "setup.py").read_text())
    assert extra, "setup.py has no bench extra"
    packages = set(re.findall(r'"([\w.-]+)"', extra.group(1)))
    assert set(PEERS.values()) | {"matplotlib"} <= packages
    assert not any(p.startswith("torch") and p != "torchmetrics" for p in packages)  # never another torch
    assert peers_install_command(["kornia", "cv2"]) == "pip install kornia opencv-python-headless"


def test_missing_peers_are_said_at_the_top_and_in_every_report(monkeypatch, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    gone = {"kornia", "cv2"}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] in gone else real(name, *a))
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    assert main(["bench", "--smoke", "--threads", "1", "--no-progress", "--only", "composite",
                 "--json", str(js), "--markdown", str(md)]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = len(report.header_lines({"machine": {}, "command": ""}))
    warning = lines[head]  # the line right under the machine header, before the run
    assert warning.startswith("WARNING: peers not installed: ") and "kornia" in warning and "cv2" in warning
    assert "pip install " in warning and "kornia" in warning.split("pip install ")[1]
    assert "opencv-python-headless" in warning.split("pip install ")[1]
    assert lines.count(warning) == 2  # at the top and in the final report
    assert warning in md.read_text()
    data = json.loads(js.read_text())
    assert {"kornia", "cv2"} <= set(data["missing_peers"]["modules"])
    assert data["missing_peers"]["install"] == peers_install_command(data["missing_peers"]["modules"])


def test_no_peer_warning_when_all_are_installed():
    results = _results(_case("ops", "op", "forward", "1x3x8x8", [_row("ours", 1.0, ours=True)]))
    assert report.missing_peers_line(results) is None
    assert "WARNING" not in report.render_text(results) and "WARNING" not in report.render_markdown(results)


def test_goals_of_the_issues():
    judge = goals.judge
    assert judge("ssim_loss", "forward+backward", "pytorch_msssim", "cpu", 9.0)["goal_met"] is False
    assert judge("ssim_loss", "forward+backward", "pytorch_msssim", "cpu", 12.0)["goal_met"] is True
    assert judge("median_filter", "forward", "kornia median_blur", "cpu", 400.0)["goal_min_ratio"] == 500.0
    g = judge("median_filter", "forward", "opencv medianBlur uint8", "cpu", 0.8)
    assert g["goal_met"] is True and g["below_one_note"] and "uint8" in g["below_one_note"]
    assert judge("median_filter", "forward", "derain_kernels uint8", "cpu", 0.85)["goal_min_ratio"] is None
    assert judge("self_correcting_block", "forward+backward", "eager channels-last", "cpu", 1.9)["goal_met"] is False
    assert judge("self_correcting_block", "forward", "eager channels-last", "cpu", 1.9)["goal_min_ratio"] == 1.0
    assert judge("self_correcting_block", "forward+backward", "eager channels-last", "cuda", 1.9)["goal_met"]
    assert judge("RainOerMeNet G", "inference", "torch.compile (eager contiguous)", "cpu", 1.0)["goal_met"] is False
    assert judge("RainOerMeNet G", "inference", "eager contiguous", "cuda", 0.99)["goal_min_ratio"] is None
    assert judge("tv_loss", "forward", "eager torch.diff", "cpu", 1.5) == {
        "goal": goals.DEFAULT_GOAL[1], "goal_min_ratio": 1.0, "goal_met": True, "below_one_note": None}
    assert judge("tv_loss", "forward", "eager torch.diff", "cpu", 0.8)["below_one_note"] == goals.UNKNOWN_BELOW_ONE
    assert "Triton" in judge("ssim", "forward", "kornia", "cuda", 0.3)["below_one_note"]
    # a note is for its own mode only: forward's fixed-cost reason does not excuse forward+backward
    assert "add and clamp loops" in judge("rain_composite", "forward", "torch add+clamp", "cpu", 0.9)["below_one_note"]
    assert judge("rain_composite", "forward+backward", "torch add+clamp", "cpu", 0.9)["below_one_note"] \
        == goals.UNKNOWN_BELOW_ONE


def test_report_gives_each_ratio_its_goal_and_explains_rows_below_one():
    results = _results(
        _case("ops", "min_composite", "forward", "8x3x128x128",
              [_row("derain_kernels", 0.13, ours=True), _row("torch.minimum", 0.12, ratio=0.95)]),
        _case("ops", "min_composite", "forward", "1x3x512x512",
              [_row("derain_kernels", 0.3, ours=True), _row("torch.where", 1.7, ratio=5.6),
               _row("torch.minimum", 0.158, ratio=0.52)]),
        _case("ops", "self_correcting_block", "forward+backward", "8x16x128x128",
              [_row("derain_kernels", 12.0, ours=True), _row("eager channels-last", 23.0, ratio=1.9)]),
        _case("ops", "tv_loss", "forward", "8x3x128x128",
              [_row("derain_kernels", 12.0, ours=True), _row("eager torch.diff", 10.0, ratio=0.8)]))
    text, md = report.render_text(results), report.render_markdown(results)
    minimum_note = goals.below_one_note("min_composite", "forward", "torch.minimum", "cpu")
    assert minimum_note != goals.UNKNOWN_BELOW_ONE and "fixed cost per call" in minimum_note
    for out in (text, md):
        assert "| ours faster | goal | note |" in out or any(
            line.startswith("op ") and "  ours faster  goal" in line for line in out.splitlines())
        assert "≥ 1× (below)" in out and "≥ 2× (below)" in out
        assert "Rows below 1× (that contender was faster than ours), and why:" in out
        assert (f"- min_composite forward vs torch.minimum (8x3x128x128 0.95×; 1x3x512x512 0.52×): "
                f"{minimum_note}") in out
        assert f"- tv_loss forward vs eager torch.diff (8x3x128x128 0.80×): {goals.UNKNOWN_BELOW_ONE}" in out
        assert ("- self_correcting_block forward+backward 8x16x128x128 vs eager channels-last: 1.90× "
                "(goal ≥ 2×)") in out
        assert "min_composite forward vs torch.where (" not in out  # a row above its goal gets no note
        assert "goal = the ratio the comparison should reach" in out
    case = report.annotate(results["cases"][1])
    by = {r["impl"]: r for r in case["rows"]}
    assert by["torch.where"]["goal_met"] is True and by["torch.where"]["below_one_note"] is None
    assert by["torch.minimum"]["goal_met"] is False and by["torch.minimum"]["below_one_note"] == minimum_note
    assert by["derain_kernels"]["goal"] is None


def test_table_iv_and_op_table_network_figures_are_reconciled():
    def net(impl, mean, median, ours=False, repeats=100):
        return dict(_row(impl, median, ours=ours, repeats=repeats), mean_ms=mean)

    t4 = _case("network", "RainOerMeNet G", "inference", "1x3x512x512",
               [net("fused (derain_kernels)", 130.0, 100.0, ours=True), net("eager contiguous", 420.0, 400.0)])
    op = _case("ops", "rain_oer_me network", "inference", "1x3x512x512",
               [net("derain_kernels fused", 96.0, 95.9, ours=True, repeats=7),
                net("eager contiguous", 383.0, 383.0, repeats=7)])
    results = _results(t4, op, load=1.5)
    cross = report.network_cross_check(results)
    assert cross["table_iv_mean_ms"] == 130.0 and cross["op_table_median_ms"] == 95.9
    assert cross["median_difference_percent"] == pytest.approx(100 * (100.0 / 95.9 - 1))
    for part in ("mean over 100 distinct images", "0.130 s; median 0.100 s", "median of 7 calls on one image",
                 "95.90 ms", "differ by +4 %", "1-min load average 1.5"):
        assert part in cross["text"], part
    for out in (report.render_text(results), report.render_markdown(results)):
        assert cross["text"] in out
        assert "Goal: ours faster than every eager and compiled variant" in out
        assert "3.23×" in out  # Table IV's ratio is from means (420 / 130)
    assert report.row_goal(t4, t4["rows"][1])["goal_met"] is True
    assert report.network_cross_check(_results(t4)) is None  # only when both sections ran
    other = _case("ops", "rain_oer_me network", "inference", "1x3x40x36", op["rows"])
    assert report.network_cross_check(_results(t4, other)) is None  # and on the same image size


# ---------------------------------------------------------------- end to end
def _fmt_in(md: str, row: dict) -> bool:
    return report.fmt_ms(row["median_ms"]) in md or report.fmt_s(row["mean_ms"]) in md


def test_bench_smoke_end_to_end(tmp_path, capsys):
    js, md, png = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png"
    rc = main(["bench", "--smoke", "--threads", "1", "--no-progress", "--only", "network", "composite",
               "train_step", "--json", str(js), "--markdown", str(md), "--plot", str(png)])
    assert rc == 0
    out = capsys.readouterr().out
    data = json.loads(js.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    text = md.read_text()
    assert data["command"].startswith("derain bench --smoke") and data["command"] in text
    assert data["parameters"]["G_weights"] == 51_552
    assert {c["section"] for c in data["cases"]} == {"network", "ops", "train_step"}
    assert data["rows"] and len(data["rows"]) == sum(len(c["rows"]) for c in data["cases"])
    assert data["missing_peers"].keys() == {"modules", "install"}
    assert data["smoke"] is True and report.SMOKE_GOALS in out.lower() and report.SMOKE_GOALS in text.lower()
    for row in data["rows"]:
        assert {"goal", "goal_min_ratio", "goal_met", "below_one_note"} <= row.keys()
        assert (row["goal"] is None) == row["ours"]
        assert row["goal_met"] is None and row["below_one_note"] is None  # tiny sizes: no verdict
        assert row["status"] in ("ok", "skipped", "failed")
        assert row["impl"] in text and row["impl"] in out
        if row["status"] == "ok":
            assert row["repeats"] >= 1 and row["min_ms"] <= row["median_ms"] <= row["max_ms"]
            assert _fmt_in(text, row), row
    for name, params, cpu, _ in network.QUOTED:
        assert name in text and f"{cpu:.2f}" in text
    assert "quoted from TIP Table IV" in text and "quoted from TIP Table IV" in out
    assert "51,552" in out and "51,843" in out and "threads 1" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_smoke_lists_suites_without_smoke_sizes(monkeypatch, tmp_path):
    import derain.bench as bench_pkg

    def cases(quick=False):
        return [Case("fake_op", "forward", "1x1", [Contender("ours", lambda: (lambda: None), ours=True)])]

    module = types.ModuleType("derain.bench.fake_suite")
    module.cases = cases
    monkeypatch.setitem(sys.modules, "derain.bench.fake_suite", module)
    monkeypatch.setattr(bench_pkg, "SUITES", [*bench_pkg.SUITES, "fake_suite"])
    js = tmp_path / "r.json"
    assert main(["bench", "--smoke", "--no-progress", "--only", "fake_suite", "--json", str(js)]) == 0
    (row,) = json.loads(js.read_text())["rows"]
    assert row["status"] == "skipped" and "smoke" in row["reason"]


def test_bench_reports_a_broken_suite_and_runs_the_others(monkeypatch, tmp_path, capsys):
    import derain.bench as bench_pkg

    def cases(quick=False, smoke=False):
        raise ImportError("no module named fancy_peer")

    module = types.ModuleType("derain.bench.broken_suite")
    module.cases = cases
    monkeypatch.setitem(sys.modules, "derain.bench.broken_suite", module)
    monkeypatch.setattr(bench_pkg, "SUITES", [*bench_pkg.SUITES, "broken_suite"])
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    assert main(["bench", "--smoke", "--threads", "1", "--no-progress", "--only", "composite", "broken_suite",
                 "--json", str(js), "--markdown", str(md)]) == 0
    data = json.loads(js.read_text())
    assert data["suite_errors"] == {"broken_suite": "ImportError: no module named fancy_peer"}
    assert data["rows"] and all(r["status"] == "ok" for r in data["rows"])
    assert "broken_suite failed: ImportError" in md.read_text()
    assert "broken_suite failed: ImportError" in capsys.readouterr().out


def test_bench_rejects_unknown_section(capsys):
    assert main(["bench", "--smoke", "--only", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_bench_plot_without_matplotlib_is_a_clear_error(monkeypatch, capsys, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert main(["bench", "--smoke", "--only", "composite", "--plot", str(tmp_path / "p.png")]) == 2
    assert "matplotlib" in capsys.readouterr().err


@pytest.mark.parametrize("suite", __import__("derain.bench", fromlist=["SUITES"]).SUITES)
def test_op_suite_runs_in_smoke_sizes(suite):
    """Every op suite of `derain bench` builds its cases and each contender runs (tiny sizes)."""
    import importlib
    import inspect

    torch.set_num_threads(1)
    cases_fn = importlib.import_module(f"derain.bench.{suite}").cases
    if "smoke" not in inspect.signature(cases_fn).parameters:
        pytest.skip(f"suite {suite} has no smoke sizes (cases(quick, smoke=...))")
    cases = cases_fn(quick=True, smoke=True)
    assert cases and all(isinstance(c, Case) and c.contenders for c in cases)
    for case in cases:
        assert sum(c.ours for c in case.contenders) <= 1, case.op
        rows = run_case(case, Settings(warmup=1, repeats=1, memory=False, budget_s=5.0))
        failed = [(r["impl"], r["reason"]) for r in rows if r["status"] == "failed"]
        assert not failed, (case.op, case.mode, case.shape, failed)


def test_measure_on_cuda_synchronizes_and_reads_torch_peak(monkeypatch):
    """The CUDA path of the harness, with torch.cuda's counters stubbed (no GPU needed)."""
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: events.append("sync"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a: 3 * 2**20)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 8 * 2**20)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: events.append("reset"))

    def fn():
        events.append("call")

    def slow():  # one call over the CUDA sample length: one call per timed sample
        time.sleep(1.2 * harness.CUDA_SAMPLE_S)
        fn()

    t = measure(slow, warmup=1, repeats=2, device="cuda")
    assert t.peak_mib == pytest.approx(5.0) and t.repeats == 2 and t.batch == 1
    # every call is followed by a synchronize before its time is read
    calls = [i for i, e in enumerate(events) if e == "call"]
    assert len(calls) == 1 + 1 + 2 + 1 and all(events[i + 1] == "sync" for i in calls)

    # a fast call is timed in batches: each sample is `batch` calls, then one synchronize
    events.clear()
    t = measure(fn, warmup=1, repeats=3, device="cuda", memory=False)
    assert 1 < t.batch <= harness.CUDA_MAX_BATCH and t.repeats == 3
    timed = "".join("c" if e == "call" else "s" for e in events)[-3 * (t.batch + 1):]
    assert timed == ("c" * t.batch + "s") * 3


def test_bench_device_cuda_without_a_gpu_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "--smoke", "--no-progress", "--only", "composite", "--device", "cuda"]) == 2
    assert "--device cuda: torch sees no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("suite", ["composite", "median", "ssim", "related", "block"])
def test_op_suites_put_every_contender_on_the_device(suite):
    """The suites' device plumbing, checked on the meta device (no GPU here): every input and
    contender is on it, and the CPU-only peers are listed as not measured instead."""
    import importlib

    cases = importlib.import_module(f"derain.bench.{suite}").cases(quick=True, smoke=True, device="meta")
    assert cases and all(c.device == "meta" for case in cases for c in case.contenders)
    names = {c.name for case in cases for c in case.contenders}
    assert not any(n.startswith(("opencv", "scipy")) for n in names)
    if suite == "median":
        assert any("CPU only" in m for case in cases for m in case.missing)
        assert "torch unfold+median" in names
    if suite == "block":
        # the fused network is CPU-only
        assert {case.op for case in cases} == {"self_correcting_block", "conv3x3_relu", "conv3x3"}
    cpu_cases = importlib.import_module(f"derain.bench.{suite}").cases(quick=True, smoke=True)
    assert all(c.device == "cpu" for case in cpu_cases for c in case.contenders)


def test_paired_ratio_cancels_a_machine_slowdown_between_rounds():
    from derain.bench.block import paired_ratio

    ours = [10.0, 20.0, 10.0, 40.0, 10.0]  # the machine slowed down 2x and 4x in rounds 2 and 4
    theirs = [20.0, 40.0, 20.0, 80.0, 20.0]  # always twice ours within a round
    assert paired_ratio(ours, theirs) == (2.0, 2.0, 2.0)
    med, q1, q3 = paired_ratio([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])
    assert (med, q1, q3) == (2.5, 1.75, 3.25)
    assert paired_ratio([2.0], [3.0]) == (1.5, 1.5, 1.5)
    with pytest.raises(ValueError, match="equally long"):
        paired_ratio([1.0, 2.0], [1.0])


# ---------------------------------------------------------------- call overhead
from derain.bench import overhead  # noqa: E402

NOT_OPS = {"backend_info", "empty_output_cache", "config", "directional_kernels", "SSIMLoss", "nn"}


def test_overhead_section_covers_every_public_op_in_both_modes():
    import derain_kernels as dk
    from derain.commands.bench import sections

    assert "overhead" in sections()  # part of the default run
    assert {s.name for s in overhead.SPECS} == set(overhead.PUBLIC_OPS)
    # a public op added to derain_kernels must be added to the section (or listed as not an op here)
    assert set(dk.__all__) - NOT_OPS == set(overhead.PUBLIC_OPS)
    cases = overhead.cases(smoke=True)
    assert sorted((c.op, c.mode) for c in cases) == sorted(
        (op, mode) for op in overhead.PUBLIC_OPS for mode in overhead.MODES)
    for case in cases:
        assert [c.name for c in case.contenders] == [overhead.OURS, overhead.BARE, overhead.TORCH]
        assert [c.ours for c in case.contenders] == [True, False, False]
        assert harness.shape_numel(case.shape) == 16  # 1x1x4x4: tiny tensors


def test_bare_call_replays_the_dispatcher_calls_of_the_public_function():
    import derain_kernels as dk

    x, y = torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4)
    fn, names = overhead.bare_call(lambda: dk.ssim(x, y))
    assert names == "torch.ops.derain.ssim"
    torch.testing.assert_close(fn(), dk.ssim(x, y), rtol=0, atol=0)
    xg = x.clone().requires_grad_()
    with torch.enable_grad():  # with grad, ssim runs the op that also gives the gradient
        assert overhead.bare_call(lambda: dk.ssim(xg, y))[1] == "torch.ops.derain._ssim_with_grad"
    # the calls made at the top level only: _dark_channel_loss calls _dark_channel inside it
    assert overhead.bare_call(lambda: dk.dark_channel_loss(x, 3))[1] == "torch.ops.derain._dark_channel_loss"

    def two_ops():
        torch.ops.derain.min_composite(x, y)
        return torch.ops.derain.rain_composite(x, y, True)

    fn, names = overhead.bare_call(two_ops)
    assert names == "torch.ops.derain.min_composite + torch.ops.derain.rain_composite"
    assert [overhead._derain_name(f) for f, _, _ in overhead.record_dispatcher_calls(fn)] == [
        "derain::min_composite", "derain::rain_composite"]  # the replay makes both calls again
    with pytest.raises(RuntimeError, match="no torch.ops.derain call"):
        overhead.bare_call(lambda: torch.minimum(x, y))


def test_time_rounds_is_round_robin_and_reports_per_call_time():
    now = [0.0]
    log = []

    def fn(name, cost_s, fail_at=None):
        calls = [0]

        def call():
            calls[0] += 1
            log.append(name)
            now[0] += cost_s
            if fail_at is not None and calls[0] == fail_at:
                raise ValueError(f"{name} broke")
        return call

    plan = overhead.TimingPlan(warmup=2, rounds=3, calls=4)
    errors = {}
    out = overhead.time_rounds({"a": fn("a", 10e-6), "b": fn("b", 3e-6), "c": fn("c", 1e-6, fail_at=8)}, plan,
                               clock=lambda: now[0], errors=errors)
    assert log[:6] == ["a", "a", "b", "b", "c", "c"]  # warm-up, one after the other
    assert log[6:18] == ["a"] * 4 + ["b"] * 4 + ["c"] * 4  # then rounds of `calls` calls, in turn
    assert log.count("a") == log.count("b") == 2 + 3 * 4
    assert out["a"] == pytest.approx([10.0] * 3) and out["b"] == pytest.approx([3.0] * 3)
    assert log[18:28] == ["a"] * 4 + ["b"] * 4 + ["c"] * 2 and log[28:32] == ["a"] * 4  # c broke in round 2
    assert "c" not in out and str(errors["c"]) == "c broke"  # dropped, the others go on


def test_overhead_run_case_one_thread_grad_mode_and_failed_rows():
    seen = []

    def ours():
        seen.append((torch.get_num_threads(), torch.is_grad_enabled()))

    def broken():
        raise RuntimeError("no dispatcher call")

    case = Case("op", overhead.NO_GRAD, "1x1x4x4", [
        Contender(overhead.OURS, lambda: ours, ours=True),
        Contender(overhead.BARE, broken),
        Contender(overhead.TORCH, lambda: (lambda: time.sleep(1e-4)), note="torch.sleep"),
    ])
    torch.set_num_threads(2)
    with torch.no_grad():
        rows = overhead.run_case(case, overhead.TimingPlan(1, 2, 3))
    assert torch.get_num_threads() == 2  # restored
    assert seen and set(seen) == {(1, True)}  # one thread, grad mode on (as in a plain call)
    by = {r["impl"]: r for r in rows}
    assert by[overhead.BARE]["status"] == "failed"
    assert by[overhead.BARE]["reason"] == "RuntimeError: no dispatcher call"
    ours_row, torch_row = by[overhead.OURS], by[overhead.TORCH]
    assert ours_row["repeats"] == 2 and ours_row["batch"] == 3
    assert ours_row["us_per_call"] == pytest.approx(ours_row["min_ms"] * 1e3)
    assert torch_row["us_per_call"] >= 100  # each call sleeps 100 µs
    assert torch_row["speedup_vs_ours"] == pytest.approx(torch_row["us_per_call"] / ours_row["us_per_call"])


def test_overhead_goal_is_ours_at_most_twice_the_bare_call():
    for mode in overhead.MODES:
        for device in ("cpu", "cuda"):
            g = goals.judge("min_composite", mode, overhead.BARE, device, 1 / 2.5)  # ours 2.5x the bare call
            assert g["goal_min_ratio"] == 0.5 and g["goal_met"] is False
            assert g["below_one_note"] != goals.UNKNOWN_BELOW_ONE
            assert goals.judge("ssim", mode, overhead.BARE, device, 1 / 1.9)["goal_met"] is True
            near = goals.judge("ssim", mode, overhead.TORCH, device, 0.1)
            assert near["goal_min_ratio"] is None and near["goal_met"] is None
    # the op table's rows keep their own goals
    assert goals.judge("min_composite", "forward", "torch.where", "cpu", 0.4)["goal_min_ratio"] == 1.0


def _overhead_case(op, mode, ours_us, bare_us, torch_us):
    def row(impl, us, ours=False):
        r = dict(_row(impl, us / 1e3, ours=ours), op=op, mode=mode, shape="1x1x4x4", us_per_call=us,
                 note="torch.ops.derain." + op if impl == overhead.BARE else "")
        r["speedup_vs_ours"] = None if ours else us / ours_us
        return r
    rows = [row(overhead.OURS, ours_us, True), row(overhead.BARE, bare_us), row(overhead.TORCH, torch_us)]
    return {"section": "overhead", "op": op, "mode": mode, "shape": "1x1x4x4", "missing": [], "rows": rows}


def test_overhead_report_gives_ours_over_bare_its_goal_and_lists_the_misses():
    results = _results(_overhead_case("min_composite", overhead.NO_GRAD, 10.0, 4.0, 2.0),
                       _overhead_case("ssim", overhead.REQUIRES_GRAD, 6.0, 4.0, 12.0))
    results["settings"]["overhead"] = {"warmup": 5, "rounds": 7, "calls": 9, "threads": 1}
    text, md = report.render_text(results), report.render_markdown(results)
    for out in (text, md):
        assert report.SECTION_TITLES["overhead"] in out
        assert "2.50×" in out and "≤ 2× (missed)" in out and "1.50×" in out and "5.00×" in out
        assert "Ours more than 2× the bare dispatcher call (goal missed):" in out
        assert "- min_composite call, no grad: 2.50× (10.0 vs 4.0 µs)" in out
        assert "- ssim call" not in out  # within its goal
        assert "after 5 warm-up calls, 7 rounds of 9 calls" in out
    assert "| min_composite | no | 1x1x4x4 | 10.0 | 4.0 | 2.50× | ≤ 2× (missed) | 2.0 | 5.00× |" in md
    assert "| ssim | yes | 1x1x4x4 | 6.0 | 4.0 | 1.50× | ≤ 2× | 12.0 | 0.50× |" in md
    within = _results(_overhead_case("ssim", overhead.NO_GRAD, 6.0, 4.0, 12.0))
    assert "Every measured op is within 2× its bare dispatcher call." in report.render_text(within)
    assert report.overhead_table(results, first="case")[0].markdown().startswith("| case | grad |")
    results["smoke"] = True
    assert "(missed)" not in report.render_text(results) and "Goals are not judged" in report.render_text(results)


def test_bench_overhead_smoke_end_to_end(tmp_path, capsys):
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    assert main(["bench", "--smoke", "--no-progress", "--only", "overhead", "--json", str(js),
                 "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    data = json.loads(js.read_text())
    text = md.read_text()
    assert data["settings"]["overhead"]["threads"] == 1
    assert {c["section"] for c in data["cases"]} == {"overhead"}
    assert sorted((c["op"], c["mode"]) for c in data["cases"]) == sorted(
        (op, mode) for op in overhead.PUBLIC_OPS for mode in overhead.MODES)
    for case in data["cases"]:
        by = {r["impl"]: r for r in case["rows"]}
        assert set(by) == {overhead.OURS, overhead.BARE, overhead.TORCH}
        assert all(r["status"] == "ok" and r["us_per_call"] > 0 for r in case["rows"]), case
        assert by[overhead.BARE]["note"].startswith("torch.ops.derain.")
        assert by[overhead.BARE]["goal_min_ratio"] == 0.5 and by[overhead.BARE]["goal_met"] is None  # smoke
        assert by[overhead.TORCH]["speedup_vs_ours"] == pytest.approx(
            by[overhead.TORCH]["us_per_call"] / by[overhead.OURS]["us_per_call"])
        line = f"| {case['op']} | {'yes' if case['mode'] == overhead.REQUIRES_GRAD else 'no'} | {case['shape']} | "
        assert line in text
    assert report.SECTION_TITLES["overhead"] in out and report.SECTION_TITLES["overhead"] in text
