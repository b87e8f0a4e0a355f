"""Build of derain-kernels: one extension, derain_kernels._C.

C++17 CPU kernels (csrc/init.cpp, csrc/ops/*.cpp, csrc/ops/cpu/*.cpp) are
always built, with OpenMP and vectorisation flags. CUDA sources
(csrc/ops/cuda/*.cu, registered for the CUDA dispatch key) are added when torch is
a CUDA build and a CUDA toolkit is found, or when FORCE_CUDA=1; they are compiled
for sm_80 and sm_90 (+ compute_90 PTX) unless TORCH_CUDA_ARCH_LIST is set. Without
them, GPU kernels are the Triton ones (Python, JIT-compiled).

Environment:
  DERAIN_ARCH_FLAGS   instruction-set flags (default "-march=native": the kernels
                      are compiled for the machine that builds them)
  DERAIN_REQUIRE_EXTENSION=1  make a failed C++ build an error (CI sets it);
                      otherwise the package installs without it and runs on
                      the pure-PyTorch references, with a warning.
  MAX_JOBS            parallel compile jobs (default: the number of cores this
                      process may use)
  DERAIN_BUILD_DIR    where the object files are kept between builds (default
                      build/ in the checkout)
  DERAIN_BUILD_PROGRESS=0  no progress lines on the terminal

Install with  pip install --no-build-isolation -e .  (torch must already be
installed: the build compiles against it).

Rebuilds are incremental: the object files stay in build/ (pip would otherwise
compile in a new temporary folder each time), and ninja recompiles only the
sources whose text, headers or compile flags changed; an unchanged checkout
relinks in seconds. pip hides a build's output unless it fails (or with -v), so
the build writes one line per compiled file to the terminal itself (/dev/tty),
and to stderr when there is no terminal.
"""
import glob
import hashlib
import os
import shlex
import subprocess
import sys
import sysconfig
import time

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _persistent_build_temp(torch) -> str:
    """build/<platform>-<python>-torch<version>-<hash of torch's folder>: one folder per
    interpreter and torch install, so that two environments building the same checkout
    do not recompile each other's objects."""
    base = os.environ.get("DERAIN_BUILD_DIR") or os.path.join(ROOT, "build")
    where = hashlib.sha1(os.path.dirname(os.path.abspath(torch.__file__)).encode()).hexdigest()[:8]
    tag = f"{sysconfig.get_platform()}-{sys.implementation.cache_tag}-torch{torch.__version__}-{where}"
    return os.path.join(base, "derain-ext", tag.replace("+", "_"))


class _Progress:
    """Build progress for the user: pip captures the build's stdout and stderr (shown only when
    the build fails, or with pip -v), so lines go to the terminal (/dev/tty) when there is one,
    else to stderr."""

    def __init__(self):
        self.tty = None
        if os.environ.get("DERAIN_BUILD_PROGRESS", "1") != "0" and not sys.stderr.isatty():
            try:
                self.tty = open("/dev/tty", "w")
            except OSError:
                self.tty = None
        self.first = True

    def __call__(self, msg: str) -> None:
        if self.tty is not None:
            # the first line leaves pip's "Building ... -" line alone; each line clears pip's spinner
            self.tty.write(("\n" if self.first else "") + "\r\033[K" + msg + "\n")
            self.tty.flush()
        else:
            print(msg, file=sys.stderr, flush=True)
        self.first = False

    def close(self) -> None:
        if self.tty is not None:
            self.tty.close()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def _ninja_times(log_path: str, offset: int) -> dict:
    """{object file: seconds} of the edges that .ninja_log recorded after byte `offset`."""
    times = {}
    try:
        with open(log_path) as f:
            f.seek(offset)
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 4 and parts[0].isdigit() and parts[1].isdigit():
                    times[parts[3]] = (int(parts[1]) - int(parts[0])) / 1e3
    except OSError:
        pass
    return times


def _short_path(path: str) -> str:
    """`path` relative to the checkout when inside it."""
    inside = os.path.isabs(path) and path.startswith(ROOT + os.sep)
    return os.path.relpath(path, ROOT) if inside else path


def _source_of(command: str) -> str:
    """The source file a compile command compiles, relative to the checkout when inside it."""
    try:
        args = shlex.split(command)
    except ValueError:
        args = command.split()
    for arg in args:
        if arg.endswith((".cpp", ".cc", ".cxx", ".c", ".cu")):
            return _short_path(arg)
    return command.strip()[:80]


def _run_ninja_with_progress(build_directory: str, verbose: bool, error_prefix: str) -> None:
    """torch.utils.cpp_extension._run_ninja_build with a line per finished file.

    ninja's full output (compiler warnings included) goes to stdout as before (pip shows it
    on failure or with -v); the progress lines go to the user's terminal (_Progress).
    """
    jobs = os.environ.get("MAX_JOBS", "")
    jobs = int(jobs) if jobs.isdigit() and int(jobs) > 0 else _cores()
    log_path = os.path.join(build_directory, ".ninja_log")
    offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    env = dict(os.environ, NINJA_STATUS="[%f/%t] ")
    progress = _Progress()
    # a dry run counts the files to compile, so that the user knows at once what is coming
    dry = subprocess.run(["ninja", "-n", "-j", str(jobs)], cwd=build_directory, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    pending = sum(1 for line in dry.stdout.splitlines() if line.startswith("["))
    if pending:
        progress(f"derain-kernels: compiling {pending} C++ file(s), {jobs} at a time (MAX_JOBS), objects "
                 f"kept in {_short_path(os.path.abspath(build_directory))} for the next build")
    start = time.perf_counter()
    output = []
    sys.stdout.flush()
    sys.stderr.flush()
    with subprocess.Popen(["ninja", "-j", str(jobs)], cwd=build_directory, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        for line in proc.stdout:
            output.append(line)
            os.write(1, line.encode(errors="replace"))  # (fd 1: setuptools may detach sys.stdout)
            if line.startswith("ninja: no work to do"):
                progress("derain-kernels: C++ extension up to date, nothing to recompile")
            elif line.startswith("[") and "] " in line:
                status, command = line[1:].split("] ", 1)
                source = _source_of(command)
                progress(f"derain-kernels: [{status}] {source}  ({_fmt_s(time.perf_counter() - start)})")
        rc = proc.wait()
    if rc != 0:
        progress(f"derain-kernels: compilation failed after {_fmt_s(time.perf_counter() - start)}")
        progress.close()
        raise RuntimeError(f"{error_prefix}: {''.join(output)}")
    times = _ninja_times(log_path, offset)
    if times:
        slowest = sorted(times.items(), key=lambda kv: -kv[1])[:3]
        names = ", ".join(f"{os.path.basename(k).split('.o')[0]} {v:.0f} s" for k, v in slowest)
        progress(f"derain-kernels: compiled {len(times)} file(s) in {_fmt_s(time.perf_counter() - start)} "
                 f"(slowest: {names}); linking")
    progress.close()


def _extensions():
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print("derain-kernels: torch is not installed; building without the C++ extension "
              "(install torch first, then reinstall with --no-build-isolation)", file=sys.stderr)
        return [], {}

    cpp = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/ops/*.cpp") + glob.glob("csrc/ops/cpu/*.cpp")
                 + glob.glob("csrc/ops/autograd/*.cpp"))
    cu = sorted(glob.glob("csrc/ops/cuda/*.cu"))
    arch = shlex.split(os.environ.get("DERAIN_ARCH_FLAGS", "-march=native"))
    # torch >= 2.14's headers need C++20; older ones build with C++17
    torch_version = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    std = "-std=c++20" if torch_version >= (2, 14) else "-std=c++17"
    # -g0: Python's CFLAGS (which torch's build puts first) carry -g; debug info for these
    # template-heavy files costs compile and link time and is of no use in a release build.
    cxx = ["-O3", std, "-fopenmp", "-ffp-contract=off", "-Wno-c++20-extensions", "-g0", *arch]
    force_cuda = os.environ.get("FORCE_CUDA", "0") == "1"
    with_cuda = bool(cu) and (force_cuda or (torch.version.cuda is not None and cpp_extension.CUDA_HOME))
    if with_cuda:
        # GPU code for sm_80 (A100) and sm_90 (H100/H200) plus compute_90 PTX (JIT-compiled by the
        # driver on newer GPUs), unless TORCH_CUDA_ARCH_LIST names the architectures (torch then
        # adds its own -gencode flags).
        gencode = [] if os.environ.get("TORCH_CUDA_ARCH_LIST") else [
            "-gencode=arch=compute_80,code=sm_80",
            "-gencode=arch=compute_90,code=sm_90",
            "-gencode=arch=compute_90,code=compute_90",
        ]
        # A minimal CUDA toolkit (nvcc and the runtime) lacks the library headers that ATen's CUDA
        # headers include (cusparse.h, cublas_v2.h, ...); torch's nvidia-* wheels ship them. They
        # are searched after the toolkit's own headers (-isystem).
        lib_headers = []
        if not os.path.exists(os.path.join(cpp_extension.CUDA_HOME or "", "include", "cusparse.h")):
            for base in sys.path:
                for inc in sorted(glob.glob(os.path.join(base, "nvidia", "*", "include"))):
                    lib_headers += ["-isystem", inc]
        ext = cpp_extension.CUDAExtension(
            "derain_kernels._C", cpp + cu,
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", std, "--fmad=false", "--extended-lambda", *gencode, *lib_headers]},
            extra_link_args=["-fopenmp"],
            define_macros=[("DERAIN_WITH_CUDA", "1")],
        )
        print("derain-kernels: building C++ CPU and CUDA kernels", file=sys.stderr)
    else:
        ext = cpp_extension.CppExtension(
            "derain_kernels._C", cpp,
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
        print("derain-kernels: building C++ CPU kernels only (CUDA runs the Triton kernels)", file=sys.stderr)

    class BuildExt(cpp_extension.BuildExtension):
        def finalize_options(self):
            explicit = self.build_temp is not None  # build_ext --build-temp DIR
            super().finalize_options()
            # pip builds in a fresh temporary build_temp on every install; a fixed folder in the
            # checkout keeps the objects, and ninja then recompiles only what changed
            if not explicit:
                self.build_temp = _persistent_build_temp(torch)

        def build_extensions(self):
            # ninja's output reaches a pip user only with pip -v or when the build fails:
            # run ninja ourselves to report each compiled file as it finishes
            original = getattr(cpp_extension, "_run_ninja_build", None)
            if original is not None:
                cpp_extension._run_ninja_build = _run_ninja_with_progress
            try:
                super().build_extensions()
            finally:
                if original is not None:
                    cpp_extension._run_ninja_build = original

        def run(self):
            try:
                super().run()
            except Exception as exc:  # compiler missing, headers missing, ...
                if os.environ.get("DERAIN_REQUIRE_EXTENSION", "0") == "1":
                    raise
                print(f"derain-kernels: WARNING: the C++ extension failed to build ({exc}); "
                      "the package will run on its pure-PyTorch reference implementations",
                      file=sys.stderr)

    return [ext], {"build_ext": BuildExt.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="derain-kernels",
    version="0.1.0",
    description="Fused, exact, differentiable kernels for single-image rain removal "
                "(Rain O'er Me and related methods)",
    long_description=open(os.path.join(ROOT, "README.md")).read() if os.path.exists(os.path.join(ROOT, "README.md")) else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["derain_kernels", "derain_kernels.*", "derain", "derain.*"]),
    package_data={"derain": ["weights/*.safetensors", "weights/*.json", "assets/*"]},
    install_requires=[
        "torch>=2.13",
        "numpy",
        "pillow",
        "safetensors",
        "tqdm",
    ],
    extras_require={
        "triton": ["triton>=3.8"],
        # the peers `derain bench` compares against (never runtime dependencies)
        "bench": ["kornia", "pytorch-msssim", "torchmetrics", "opencv-python-headless", "scipy", "matplotlib"],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["derain = derain.cli:main"]},
    zip_safe=False,
)
