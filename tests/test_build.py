"""The build helpers of setup.py: objects kept in a persistent folder, so that ninja rebuilds
only what changed, and a progress line per compiled file (pip hides the build's output)."""
from __future__ import annotations

import os
import pathlib
import shutil
import types

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def helpers():
    """setup.py's module-level helpers, without running setup() (everything before _extensions)."""
    path = ROOT / "setup.py"
    head = path.read_text().split("\ndef _extensions", 1)[0]
    ns = {"__file__": str(path), "__name__": "derain_setup_helpers"}
    exec(compile(head, str(path), "exec"), ns)
    return types.SimpleNamespace(**ns)


def test_build_folder_is_in_the_checkout_and_per_torch_install(helpers, monkeypatch):
    monkeypatch.delenv("DERAIN_BUILD_DIR", raising=False)
    path = pathlib.Path(helpers._persistent_build_temp(torch))
    assert path.is_relative_to(ROOT / "build")
    assert f"torch{torch.__version__}".replace("+", "_") in path.name
    assert helpers._persistent_build_temp(torch) == str(path)  # the same folder build after build
    other = types.SimpleNamespace(__file__="/elsewhere/site-packages/torch/__init__.py", __version__=torch.__version__)
    assert helpers._persistent_build_temp(other) != str(path)  # another environment: its own objects
    monkeypatch.setenv("DERAIN_BUILD_DIR", "/tmp/derain-objects")
    assert helpers._persistent_build_temp(torch).startswith("/tmp/derain-objects/")


def test_source_of_a_torch_compile_command(helpers):
    src = ROOT / "csrc" / "ops" / "composite.cpp"
    cmd = (f"c++ -MMD -MF /b/composite.o.d -Wsign-compare -DNDEBUG -g -O3 -fPIC -I/t/include -c -c {src} "
           f"-o /b/composite.o -O3 -std=c++17 -g0 '-DTORCH_EXTENSION_NAME=_C'")
    assert helpers._source_of(cmd) == "csrc/ops/composite.cpp"
    assert helpers._source_of("nvcc -c /elsewhere/k.cu -o k.o") == "/elsewhere/k.cu"


def _ninja_project(tmp_path, fail=False):
    build = tmp_path / "build"
    build.mkdir()
    sources = []
    for name in ("a.cpp", "b.cpp"):
        (tmp_path / name).write_text(f"// {name}\n")
        sources.append(tmp_path / name)
    rule = "false" if fail else "cp $in $out"
    lines = ["ninja_required_version = 1.3", "rule compile", f"  command = {rule}"]
    lines += [f"build {s.stem}.o: compile {s}" for s in sources]
    (build / "build.ninja").write_text("\n".join(lines) + "\n")
    return build, sources


@pytest.mark.skipif(shutil.which("ninja") is None, reason="ninja is not installed")
def test_ninja_rebuilds_only_what_changed_and_says_so(helpers, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("DERAIN_BUILD_PROGRESS", "0")  # progress lines to stderr, not the terminal
    monkeypatch.setenv("MAX_JOBS", "1")
    build, (a, b) = _ninja_project(tmp_path)

    helpers._run_ninja_with_progress(str(build), True, "build failed")
    err = capfd.readouterr().err
    assert "compiling 2 C++ file(s), 1 at a time" in err
    assert f"[1/2] {a}" in err or f"[1/2] {b}" in err
    assert "[2/2] " in err and "compiled 2 file(s)" in err

    helpers._run_ninja_with_progress(str(build), True, "build failed")  # nothing changed
    err = capfd.readouterr().err
    assert "up to date, nothing to recompile" in err and "[1/" not in err

    st = a.stat()
    os.utime(a, (st.st_atime, st.st_mtime + 10))  # one source edited
    helpers._run_ninja_with_progress(str(build), True, "build failed")
    err = capfd.readouterr().err
    assert f"[1/1] {a}" in err and str(b) not in err


@pytest.mark.skipif(shutil.which("ninja") is None, reason="ninja is not installed")
def test_ninja_failure_raises_with_the_output(helpers, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("DERAIN_BUILD_PROGRESS", "0")
    build, _ = _ninja_project(tmp_path, fail=True)
    with pytest.raises(RuntimeError, match=r"(?s)build failed: .*FAILED"):
        helpers._run_ninja_with_progress(str(build), True, "build failed")
    assert "compilation failed" in capfd.readouterr().err


def test_jobs_default_to_the_cores(helpers, tmp_path, capfd, monkeypatch):
    if shutil.which("ninja") is None:
        pytest.skip("ninja is not installed")
    monkeypatch.setenv("DERAIN_BUILD_PROGRESS", "0")
    monkeypatch.delenv("MAX_JOBS", raising=False)
    build, _ = _ninja_project(tmp_path)
    helpers._run_ninja_with_progress(str(build), True, "build failed")
    assert f"{helpers._cores()} at a time" in capfd.readouterr().err
