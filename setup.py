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
  MAX_JOBS            parallel compile jobs (ninja)

Install with  pip install --no-build-isolation -e .  (torch must already be
installed: the build compiles against it).
"""
import glob
import os
import shlex
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _extensions():
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print("derain-kernels: torch is not installed; building without the C++ extension "
              "(install torch first, then reinstall with --no-build-isolation)", file=sys.stderr)
        return [], {}

    cpp = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/ops/*.cpp") + glob.glob("csrc/ops/cpu/*.cpp"))
    cu = sorted(glob.glob("csrc/ops/cuda/*.cu"))
    arch = shlex.split(os.environ.get("DERAIN_ARCH_FLAGS", "-march=native"))
    # torch >= 2.14's headers need C++20; older ones build with C++17
    torch_version = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    std = "-std=c++20" if torch_version >= (2, 14) else "-std=c++17"
    cxx = ["-O3", std, "-fopenmp", "-ffp-contract=off", "-Wno-c++20-extensions", *arch]
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
    extras_require={"triton": ["triton>=3.8"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["derain = derain.cli:main"]},
    zip_safe=False,
)
