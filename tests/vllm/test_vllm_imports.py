"""vLLM's private names are reached only through ``ead_vllm/vllm_ext/seams/``.

Walks the syntax tree of every runtime module (``ead_vllm``, ``kernels``, ``serve``,
``openrlhf_bridge``) and fails on a ``vllm`` import outside ``seams/`` that is not on
the short allowlist of public API below, on a module name handed to an import hook
outside ``seams/``, and on ``torch.ops._C`` (vLLM's compiled ops) outside ``seams/``.
Imports under ``if TYPE_CHECKING:`` are annotations only and never run.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.vllm_sources]

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("ead_vllm", "kernels", "serve", "openrlhf_bridge")
SEAMS = REPO / "ead_vllm" / "vllm_ext" / "seams"

#: vLLM modules whose names ead-vllm may import anywhere: vLLM's public API.
PUBLIC = {
    "vllm": "LLM, SamplingParams, EngineArgs: vLLM's top-level API",
    "vllm.sampling_params": "SamplingParams",
    "vllm.config": "VllmConfig, ParallelConfig: the engine configuration",
    "vllm.config.model": "LogprobsMode, PROCESSED_LOGPROBS_MODES: values users pass",
    "vllm.engine.arg_utils": "EngineArgs (also vllm.EngineArgs)",
    "vllm.exceptions": "VLLMValidationError, what request validation raises",
    "vllm.v1.sample.logits_processor": "runner V1's documented custom-processor API",
}
HOOKS = {"import_module", "when_imported", "attr", "find_spec"}
VLLM_MODULE = re.compile(r"^vllm(\.\w+)+$")


def runtime_modules() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]
    return [p for p in files if SEAMS not in p.parents]


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden |= {id(n) for n in ast.walk(node)}
    return hidden


def violations(path: Path) -> list[str]:
    """Every private vLLM reach in ``path``, as ``file:line: what``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    hidden = _type_checking_nodes(tree)
    where = path.relative_to(REPO) if REPO in path.parents else path.name
    found = []
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            if (name == "vllm" or name.startswith("vllm.")) and name not in PUBLIC:
                found.append(f"{where}:{node.lineno}: imports {name}")
        if isinstance(node, ast.Call):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if fname in HOOKS:
                for arg in node.args[:1]:
                    if isinstance(arg, ast.Constant) and VLLM_MODULE.match(str(arg.value)):
                        found.append(f"{where}:{node.lineno}: {fname}({arg.value!r})")
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if any(t.endswith("_MODULE") for t in targets) and VLLM_MODULE.match(
                str(node.value.value)
            ):
                found.append(f"{where}:{node.lineno}: names vLLM module {node.value.value}")
        if isinstance(node, ast.Attribute) and ast.unparse(node).startswith("torch.ops._C"):
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_private_vllm_names_only_behind_seams() -> None:
    files = runtime_modules()
    assert len(files) > 40
    found = [v for path in files for v in violations(path)]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from vllm.v1.sample.sampler import Sampler\n", "imports vllm.v1.sample.sampler"),
        ("import vllm.v1.worker.gpu.model_runner\n", "imports vllm.v1.worker.gpu.model_runner"),
        ("def f():\n    from vllm.utils.torch_utils import PIN_MEMORY\n", "imports vllm.utils"),
        ("X_MODULE = 'vllm.v1.worker.gpu_model_runner'\n", "names vLLM module"),
        ("import importlib\nimportlib.import_module('vllm.v1.sample.metadata')\n", "import_module"),
        ("import torch\ny = torch.ops._C.fused_gumbel_argmax\n", "torch.ops._C"),
    ],
)
def test_the_walk_catches_each_kind_of_reach(tmp_path: Path, source: str, expected: str) -> None:
    path = tmp_path / "probe.py"
    path.write_text(source)
    found = violations(path)
    assert any(expected in v for v in found), found


def test_public_names_and_type_only_imports_pass(tmp_path: Path) -> None:
    path = tmp_path / "probe.py"
    path.write_text(
        "from typing import TYPE_CHECKING\nfrom vllm import SamplingParams\n"
        "if TYPE_CHECKING:\n    from vllm.v1.sample.metadata import SamplingMetadata\n"
    )
    assert violations(path) == []
