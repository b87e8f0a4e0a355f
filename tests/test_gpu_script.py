"""scripts/gpu_check.sh (run by hand on a GPU machine): it parses, and without an output folder it
stops with its usage line before touching anything."""
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_gpu_check_script_needs_an_output_folder(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0
    assert "usage: scripts/gpu_check.sh OUTDIR" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_triton_block_sweep_without_a_gpu_says_so():
    # benchmarks/triton_block_sweep.py (the launch-parameter sweep behind the Triton block's
    # defaults) needs a CUDA GPU: without one it says so and exits 1
    import sys

    sweep = SCRIPT.parents[1] / "benchmarks" / "triton_block_sweep.py"
    r = subprocess.run([sys.executable, str(sweep)], capture_output=True, text=True,
                       env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 1, r.stderr
    assert "needs a CUDA GPU" in r.stdout


def test_overhead_probe_runs_without_a_gpu_and_prints_the_table_the_script_shows(tmp_path, capsys):
    # scripts/gpu_check.sh runs `benchmarks/cuda_overhead.py` (now `derain bench --only overhead`)
    # and shows its output from the line that starts with "| case"
    import importlib.util
    import json

    path = SCRIPT.parents[1] / "benchmarks" / "cuda_overhead.py"
    spec = importlib.util.spec_from_file_location("cuda_overhead", path)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    js = tmp_path / "overhead.json"
    assert probe.main(["--smoke", "--device", "cpu", "--json", str(js)]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("| case |")):]
    ops = {c["op"] for c in json.loads(js.read_text())["cases"] if c["section"] == "overhead"}
    assert "min_composite" in ops and "self_correcting_block" in ops
    assert all(any(line.startswith(f"| {op} |") for line in table) for op in ops)


def test_median_throughput_runs_without_a_gpu_and_prints_its_rows(capsys):
    # scripts/gpu_check.sh runs benchmarks/median_throughput.py on the GPU; --smoke on the CPU here
    import importlib.util

    path = SCRIPT.parents[1] / "benchmarks" / "median_throughput.py"
    spec = importlib.util.spec_from_file_location("median_throughput", path)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    assert probe.main(["--smoke", "--device", "cpu"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| derain_kernels |")]
    assert len(rows) == 1 and float(rows[0].split("|")[4]) > 0
