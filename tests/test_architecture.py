"""The package's layering, checked on the syntax trees of every module of peftsp/ and by running
the commands without torch.

- torch and its kin (fair-esm, pytorch-crf, transformers, safetensors, huggingface_hub), and
  peftsp.train, which holds everything that needs them, are imported outside peftsp/train/ only
  lazily, inside a function (command dispatch, a checkpoint opened by `open_model`): never by
  the module-level code that runs on import;
- the module-level imports among peftsp modules have no cycle;
- no module uses a private (`_name`) function or attribute of another peftsp module;
- `peftsp predict`, `pipeline`, `shard`, `merge` and `evaluate --model <bundle>` run where
  importing torch, fair-esm or pytorch-crf fails.

Each checker is also run on small made-up sources, to show that it finds what it looks for.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "peftsp"
DEFAULT_MODEL = PACKAGE / "default_model"
# Distributions of the `train` extra, by import name.
HEAVY = ("torch", "esm", "torchcrf", "transformers", "safetensors", "huggingface_hub")
TRAIN = "peftsp.train"


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. peftsp.workflow.runner
    is_package: bool
    tree: ast.Module

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]


def parse(name: str, source: str, is_package: bool = False) -> Module:
    return Module(name, is_package, ast.parse(source))


def package_modules() -> dict[str, Module]:
    """Every module of peftsp/, by dotted name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        found[name] = Module(name, is_package, ast.parse(path.read_text(), str(path)))
    return found


# --- what a module imports --------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One imported name: `module` (absolute), and `name` when it came as `from module import
    name` (it may be a submodule or an attribute)."""

    module: str
    name: str | None
    line: int
    at_import: bool  # runs when the module is imported (not inside a function)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports(module: Module) -> list[Import]:
    """Every import of a module: statements, and importlib.import_module / __import__ calls
    with a literal name; `at_import` tells whether it runs when the module is imported (code
    outside function bodies, but with decorators and default values; `if TYPE_CHECKING:` blocks
    never run)."""
    found: list[Import] = []

    def visit(node: ast.AST, at_import: bool) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            arguments = node.args
            for child in [*arguments.defaults, *(d for d in arguments.kw_defaults if d)]:
                visit(child, at_import)
            for child in getattr(node, "decorator_list", []):
                visit(child, at_import)
            for child in node.body if isinstance(node.body, list) else [node.body]:
                visit(child, False)
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, at_import)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(a.name, None, node.lineno, at_import) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            found.extend(Import(base, a.name, node.lineno, at_import) for a in node.names)
        elif isinstance(node, ast.Call):
            function = node.func
            called = (
                function.attr
                if isinstance(function, ast.Attribute)
                else getattr(function, "id", None)
            )
            if called in ("import_module", "__import__") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.append(Import(first.value, None, node.lineno, at_import))
        for child in ast.iter_child_nodes(node):
            visit(child, at_import)

    visit(module.tree, True)
    return found


def _names(item: Import) -> list[str]:
    """The dotted names an import may load: the module, and module.name for `from` imports."""
    return [item.module] + ([f"{item.module}.{item.name}"] if item.name else [])


def _within(name: str, top: str) -> bool:
    return name == top or name.startswith(top + ".")


# --- (a) torch stays behind peftsp.train -----------------------------------------------------


def heavy_imports_at_import(module: Module) -> list[str]:
    """Imports of HEAVY packages or peftsp.train that run when `module` is imported; none are
    allowed outside peftsp.train."""
    if _within(module.name, TRAIN):
        return []
    problems = []
    for item in imports(module):
        if not item.at_import:
            continue
        for name in _names(item):
            if name.split(".")[0] in HEAVY or _within(name, TRAIN):
                problems.append(f"{module.name}:{item.line} imports {name} at module level")
                break
    return problems


def test_nothing_outside_train_imports_torch_when_it_is_imported():
    modules = package_modules()
    assert {"peftsp.cli", "peftsp.predict", "peftsp.workflow.runner"} <= set(modules)
    assert any(_within(name, TRAIN) for name in modules)
    problems = [p for module in modules.values() for p in heavy_imports_at_import(module)]
    assert problems == []


def test_the_torch_check_finds_module_level_imports_and_allows_lazy_ones():
    bad = parse(
        "peftsp.x",
        textwrap.dedent(
            """
            import numpy
            import torch.nn as nn
            from esm import pretrained
            from peftsp import train
            from .train.model import CheckpointSession
            import importlib
            crf = importlib.import_module("torchcrf")
            try:
                from huggingface_hub import hf_hub_download
            except ImportError:
                hf_hub_download = None
            class Holder:
                import safetensors
            def ok():
                import torch
                from peftsp.train import model
            if TYPE_CHECKING:
                import transformers
            """
        ),
    )
    lines = [p.split(" imports ")[0] for p in heavy_imports_at_import(bad)]
    assert lines == [f"peftsp.x:{n}" for n in (3, 4, 5, 6, 8, 10, 14)]
    inside = parse("peftsp.train.model", "import torch\nfrom peftsp.train import crf\n")
    assert heavy_imports_at_import(inside) == []


# --- (b) no import cycle ---------------------------------------------------------------------


def import_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    """module -> the peftsp modules its module-level code imports (each with the packages it
    loads on the way, except the module's own packages, already loading when it runs)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, module in modules.items():
        for item in imports(module):
            if not item.at_import:
                continue
            for target in _names(item):
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    loaded = ".".join(parts[:i])
                    if loaded in modules and loaded != name and not _within(name, loaded):
                        graph[name].add(loaded)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_module_level_imports_among_peftsp_modules_have_no_cycle():
    graph = import_graph(package_modules())
    assert "peftsp.workflow.commands" in graph["peftsp.workflow.runner"]  # the graph is seen
    assert cycles(graph) == []


def test_the_cycle_check_finds_cycles():
    modules = {
        "peftsp": parse("peftsp", "", is_package=True),
        "peftsp.a": parse("peftsp.a", "from peftsp import b\n"),
        "peftsp.b": parse("peftsp.b", "import peftsp.c\n"),
        "peftsp.c": parse("peftsp.c", "from peftsp.a import thing\n"),
        "peftsp.d": parse("peftsp.d", "def later():\n    import peftsp.a\n"),
        "peftsp.e": parse("peftsp.e", "from . import a\n"),
    }
    graph = import_graph(modules)
    assert graph["peftsp.d"] == set() and graph["peftsp.e"] == {"peftsp.a"}
    assert cycles(graph) == [["peftsp.a", "peftsp.b", "peftsp.c"]]


# --- (c) no private names of other modules ---------------------------------------------------


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(module: Module, known: set[str]) -> list[str]:
    """Uses of a private name of another peftsp module: `from peftsp.x import _f`, and
    `x._f` / `peftsp.x._f` where x is bound to a peftsp module (anywhere in the module)."""
    bound: dict[str, str] = {}  # local name -> module
    problems = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    bound[top] = top
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in known:
                    bound[alias.asname or alias.name] = target
                elif base in known and base != module.name and _private(alias.name):
                    problems.append(f"{module.name}:{node.lineno} imports {base}.{alias.name}")
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.Attribute) or not _private(node.attr):
            continue
        owner = _dotted(node.value)
        if owner is None:
            continue
        head, _, rest = owner.partition(".")
        resolved = bound.get(head)
        if resolved is None:
            continue
        target = f"{resolved}.{rest}" if rest else resolved
        if target in known and target != module.name:
            problems.append(f"{module.name}:{node.lineno} uses {target}.{node.attr}")
    return sorted(problems, key=lambda p: int(p.split(" ")[0].rpartition(":")[2]))


def test_no_module_uses_private_names_of_another():
    modules = package_modules()
    known = set(modules)
    problems = [p for module in modules.values() for p in private_uses(module, known)]
    assert problems == []


def test_the_private_check_finds_private_uses():
    known = {"peftsp", "peftsp.cli", "peftsp.fasta", "peftsp.workflow", "peftsp.workflow.shard"}
    source = textwrap.dedent(
        """
        import peftsp.cli
        from peftsp import fasta
        from peftsp.fasta import _decode, read_proteins
        from peftsp.workflow import shard as sh
        from . import _local_helper
        def f(args):
            peftsp.cli._handler(args.command)(args)
            fasta._cleaned_proteins("x")
            sh._split(1, 2, 3)
            fasta.__name__, fasta.read_proteins, args._private, sh.log
            return _decode
        """
    )
    module = parse("peftsp.workflow.runner", source)
    assert [p.split(" ", 1)[1] for p in private_uses(module, known)] == [
        "imports peftsp.fasta._decode",
        "imports peftsp.workflow._local_helper",  # the package's __init__: another module
        "uses peftsp.cli._handler",
        "uses peftsp.fasta._cleaned_proteins",
        "uses peftsp.workflow.shard._split",
    ]
    own = parse("peftsp.fasta", "import peftsp.fasta\npeftsp.fasta._decode(1)\n")
    assert private_uses(own, known) == []


# --- (d) the prediction commands run without torch -------------------------------------------

BLOCKER = """\
import os
with open(os.environ["PEFTSP_BLOCKED_LOG"], "a") as log:
    log.write(__name__ + "\\n")
raise ImportError(f"{__name__} is blocked: this command must run without it")
"""


@pytest.fixture
def without_torch(tmp_path) -> tuple[dict[str, str], Path]:
    """An environment where importing torch and its kin fails (a directory first on PYTHONPATH
    whose torch/, esm/, torchcrf/, ... raise ImportError, each attempt logged)."""
    blockers = tmp_path / "blockers"
    for name in HEAVY:
        (blockers / name).mkdir(parents=True)
        (blockers / name / "__init__.py").write_text(BLOCKER)
    log = tmp_path / "blocked.log"
    log.write_text("")
    path = [str(blockers), str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in path if p),
        "PEFTSP_BLOCKED_LOG": str(log),
    }
    env.pop("PEFTSP_MODEL", None)  # the embedded default model
    return env, log


def peftsp(env: dict[str, str], cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "peftsp.cli", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_blocker_blocks(without_torch, tmp_path):
    env, log = without_torch
    for name in ("torch", "esm", "torchcrf"):
        code = f"import {name}"
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True
        )
        assert result.returncode != 0 and f"{name} is blocked" in result.stderr
    assert log.read_text().split() == ["torch", "esm", "torchcrf"]


def test_prediction_workflow_and_evaluation_commands_run_without_torch(
    without_torch, tmp_path, synthetic_file
):
    env, log = without_torch
    fasta = tmp_path / "in.faa"
    fasta.write_text(
        ">a\nMKKLLLLAVLAAALLASQAEDKNQ\n>b\nMDEKNQSTGPRHYDEKNQ\n>c\nMKRLLAVLLAGCSSEDK\n"
    )
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"sample,fasta,organism\nx,{fasta},euk\n")
    cpu = ("--device", "cpu", "--quiet")
    commands = {
        "predict": ("predict", "--fasta", str(fasta), "--outdir", "p", *cpu),
        "pipeline --fasta": ("pipeline", "--fasta", str(fasta), "--outdir", "f", *cpu),
        "pipeline --input": ("pipeline", "--input", str(sheet), "--outdir", "i", *cpu),
        "shard": ("shard", "--fasta", str(fasta), "--outdir", "s", "--shard-size", "2"),
        "merge": ("merge", "--outdir", "m", "p", "--quiet"),
        "evaluate": (
            "evaluate", "--model", str(DEFAULT_MODEL), "--data", str(synthetic_file),
            "--partition", "0", "--quiet",
        ),
    }  # fmt: skip
    for what, argv in commands.items():
        result = peftsp(env, tmp_path, *argv)
        assert result.returncode == 0, f"{what}: {result.stderr}"
    assert log.read_text() == ""  # nothing even tried to import them
    predicted, merged = (
        json.loads((tmp_path / name / "output.json").read_text())["predictions"]
        for name in ("p", "m")
    )
    assert merged == predicted and len(merged) == 3
    assert (tmp_path / "i" / "x" / "prediction_results.txt").is_file()
    assert len(list((tmp_path / "s").glob("shard_*.fasta"))) == 2


def test_a_checkpoint_still_needs_torch(without_torch, tmp_path, synthetic_file):
    """The other side: a training checkpoint is opened with torch, lazily, so the blocker
    sees the attempt (the commands above would have been caught the same way)."""
    env, log = without_torch
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"not really")
    argv = ("evaluate", "--model", str(checkpoint), "--data", str(synthetic_file))
    result = peftsp(env, tmp_path, *argv, "--partition", "0", "--quiet")
    assert result.returncode != 0
    assert "torch" in log.read_text().split()
