"""The layers of docs/architecture.md, enforced: import-linter's contracts (pyproject.toml: the
layers, the analysis capabilities' independence, presentation without a model) pass on mechlab
and fail on a copy with a forbidden import planted; the one exemption (a result's `_repr_html_`
importing its view) is used inside that method only; no module of mechlab imports itself back
through a chain of imports (function-level imports included); no module outgrows its job."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from mechlab.labels import head_label, heads_label, parse_heads, scored_heads_label

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def contract() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["tool"]["importlinter"]["contracts"][0]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the `mechlab` package under `root`, with the project's contract."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=root, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def exemptions_outside_repr_html(package: Path) -> list[str]:
    """Each ignored import of the contract that is written anywhere but inside `_repr_html_`."""
    wrong = []
    for rule in contract()["ignore_imports"]:
        importer, imported = (name.strip() for name in rule.split("->"))
        path = package.parent / (importer.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        inside = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "_repr_html_":
                inside |= {id(child) for child in ast.walk(node)}
        found = 0
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == imported:
                found += 1
                if id(node) not in inside:
                    wrong.append(f"{importer}:{node.lineno} imports {imported}")
        if not found:
            wrong.append(f"{rule} is listed but no longer written: remove it from the contract")
    return wrong


def planted_copy(tmp_path: Path, module: str, line: str) -> Path:
    shutil.copytree(ROOT / "mechlab", tmp_path / "mechlab", ignore=shutil.ignore_patterns("*.pyc"))
    path = tmp_path / "mechlab" / module
    path.write_text(path.read_text() + f"\n{line}\n")
    return tmp_path


def test_the_layers_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 kept, 0 broken" in result.stdout


def test_a_forbidden_import_breaks_the_contract(tmp_path):
    """Compute importing the CLI (two layers up) is refused, and the message names the edge."""
    root = planted_copy(tmp_path, "analysis/tokens.py", "from mechlab.cli import main  # noqa")
    result = lint_imports(root)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "mechlab.analysis is not allowed to import mechlab.cli" in result.stdout
    assert "mechlab.analysis.tokens -> mechlab.cli" in result.stdout


def test_a_base_module_importing_a_layer_breaks_the_contract(tmp_path):
    root = planted_copy(tmp_path, "io.py", "import mechlab.models.loading  # noqa")
    result = lint_imports(root)
    assert result.returncode == 1 and "mechlab.io -> mechlab.models.loading" in result.stdout


def test_presentation_importing_transformer_lens_breaks_the_contract(tmp_path):
    """Views and figures take results and data: a model class in present/ is a sign that
    presentation has started to run the model again."""
    planted = "from transformer_lens import HookedTransformer"
    root = planted_copy(tmp_path, "present/plots.py", planted)
    result = lint_imports(root)
    assert result.returncode == 1
    assert "mechlab.present is not allowed to import transformer_lens" in result.stdout


def test_views_are_imported_upwards_only_inside_repr_html():
    assert exemptions_outside_repr_html(ROOT / "mechlab") == []


def test_an_exempt_import_outside_repr_html_is_caught(tmp_path):
    """The contract ignores analysis.heads -> present.heads wherever it is written; this check does
    not: at module level it is an upward import like any other."""
    planted = "from mechlab.present.heads import heads_files"
    root = planted_copy(tmp_path, "analysis/heads.py", planted)
    assert lint_imports(root).returncode == 0  # what import-linter alone would let through
    wrong = exemptions_outside_repr_html(root / "mechlab")
    assert len(wrong) == 1 and wrong[0].startswith("mechlab.analysis.heads:")


def test_an_edge_between_analysis_capabilities_breaks_the_contract(tmp_path):
    """DLA importing the lens: capabilities share helpers (tokens, weights), not each other."""
    root = planted_copy(tmp_path, "analysis/dla.py", "from mechlab.analysis.lens import logit_lens")
    result = lint_imports(root)
    assert result.returncode == 1
    assert "mechlab.analysis.dla is not allowed to import mechlab.analysis.lens" in result.stdout


# --------------------------------------------------------------------------------------------------
# Import cycles: import-linter sees a cycle inside one layer as allowed, and a function-level
# import hides one from Python until the function runs.


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, name: str, modules: set[str]) -> set[str]:
    """The mechlab modules `path` imports anywhere (inside functions too), except under
    ``if TYPE_CHECKING:`` and inside `_repr_html_` (the exemption checked above)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.FunctionDef) and node.name == "_repr_html_":
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package of this module
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}".rstrip(".")
            for alias in node.names:  # `from mechlab.x import y`: y a module, or a name of x
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return (found & modules) - {name}


def import_cycles(package: Path) -> list[list[str]]:
    """Every set of modules that import one another in a cycle (Tarjan's strongly connected
    components of the import graph, those of more than one module)."""
    paths = {module_name(path, package): path for path in package.rglob("*.py")}
    graph = {name: imported_modules(path, name, set(paths)) for name, path in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def test_no_module_imports_itself_back():
    assert import_cycles(ROOT / "mechlab") == []


def test_a_cycle_hidden_in_a_function_is_found(tmp_path):
    """The cycle this check was written for: heads imported circuits inside a function, and
    circuits imported heads."""
    planted = "def planted():\n    from mechlab.analysis.circuits import circuits  # noqa"
    root = planted_copy(tmp_path, "analysis/heads.py", planted)
    assert import_cycles(root / "mechlab") == [
        ["mechlab.analysis.circuits", "mechlab.analysis.heads"]
    ]


def test_an_import_for_type_checking_alone_is_no_cycle(tmp_path):
    planted = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import mechlab.analysis.circuits"
    )
    root = planted_copy(tmp_path, "analysis/heads.py", planted)
    assert import_cycles(root / "mechlab") == []


MAX_LINES = 700  # a module longer than this has more than one job: split it
MAX_COMMAND_LINES = 200  # a command module parses, calls and writes; the layers below do the work


def test_no_module_outgrows_its_job():
    long = {
        str(path.relative_to(ROOT)): n
        for path in (ROOT / "mechlab").rglob("*.py")
        if (n := len(path.read_text().splitlines()))
        > (
            MAX_COMMAND_LINES
            if path.parent.name == "cli" and path.stem not in ("__init__", "common", "arguments")
            else MAX_LINES
        )
    }
    assert long == {}


def test_head_labels_round_trip():
    heads = [(18, 6), (0, 11)]
    assert [head_label(*head) for head in heads] == ["L18H6", "L0H11"]
    assert heads_label([[18, 6, 0.5], (0, 11)]) == "L18H6, L0H11"
    assert scored_heads_label([(18, 6, 0.912), (2, 3, -1.0)], "+.2f") == "L18H6 +0.91, L2H3 -1.00"
    assert parse_heads(" 18.6,0.11, ") == heads
    for bad in ("18", "18.x", "L18H6", ","):
        with pytest.raises(ValueError, match=r"LAYER.HEAD|no heads"):
            parse_heads(bad)
