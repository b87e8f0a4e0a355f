"""The package's layers import only downwards (checked on the source, with ast).

    derain_kernels/_contracts.py, _layout.py, _checks.py   shared definitions: torch and the stdlib only
    derain_kernels/reference/   the test oracle: nothing from ops/ or triton/ (it must not share code with
                                what it checks), only the shared definitions
    derain_kernels/triton/      the CUDA kernels: nothing from ops/ or reference/
    derain_kernels/ops/         the public wrappers: the shared definitions, _backend, the kernels through
                                torch.ops, and the `reference` package as the fallback without the C++
                                extension (no constants or helpers from its modules)
    derain_kernels (all)        nothing from derain/ (the model, trainer and CLI sit on top of the library)
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "derain_kernels"
NEUTRAL = {"derain_kernels._contracts", "derain_kernels._layout", "derain_kernels._checks"}

# layer -> derain_kernels modules it may import (a module, or a package and everything in it when it ends in ".")
ALLOWED = {
    "neutral": set(),
    "reference": NEUTRAL | {"derain_kernels.reference."},
    "triton": NEUTRAL | {"derain_kernels.triton."},
    "ops": NEUTRAL | {"derain_kernels.ops.", "derain_kernels._backend", "derain_kernels.reference"},
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    return _imports_of(path.read_text(), _module_name(path), path.name == "__init__.py")


def _imports_of(source: str, name: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in module `name`'s source, also those inside functions.

    `from a import b` yields a.b when a.b is a module of the package, else a.
    """
    tree = ast.parse(source)
    package = name if is_package else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            for a in node.names:
                sub = f"{mod}.{a.name}"
                is_module = (PKG.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                    (PKG.parent / Path(*sub.split("."))).is_dir()
                out.append((node.lineno, sub if is_module else mod))
    return out


def _layer(path: Path) -> str | None:
    rel = path.relative_to(PKG)
    if rel.parts[0] in ("reference", "triton", "ops"):
        return rel.parts[0]
    if rel.name in ("_contracts.py", "_layout.py", "_checks.py"):
        return "neutral"
    return None


def _allowed(mod: str, layer: str) -> bool:
    return any(mod.startswith(a) if a.endswith(".") else mod == a for a in ALLOWED[layer])


FILES = sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", [p for p in FILES if _layer(p)], ids=lambda p: str(p.relative_to(PKG)))
def test_layers_import_only_downwards(path):
    layer = _layer(path)
    bad = [f"line {line}: {mod}" for line, mod in _imports(path)
           if mod.startswith("derain_kernels") and not _allowed(mod, layer)]
    assert not bad, f"{path.relative_to(PKG)} ({layer} layer) imports {bad}; see this test's docstring"


def test_the_library_does_not_import_the_application():
    bad = [f"{p.relative_to(PKG)} line {line}: {mod}" for p in FILES for line, mod in _imports(p)
           if mod == "derain" or mod.startswith("derain.")]
    assert not bad, bad


def test_the_checker_sees_relative_and_nested_imports():
    """The rule is only as good as the import parser: relative, `from .. import x` and function-level imports."""
    source = ("from ..ops.rain_direction import select_kernels\n"
              "from .. import triton\n"
              "def f():\n    from ..ops import _common\n")
    mods = [m for _, m in _imports_of(source, "derain_kernels.reference.probe")]
    assert mods == ["derain_kernels.ops.rain_direction", "derain_kernels.triton", "derain_kernels.ops._common"]
    assert not any(_allowed(m, "reference") for m in mods)
