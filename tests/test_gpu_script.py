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
