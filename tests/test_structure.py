"""The package's shape: no import circles, a measuring side without torch,
the earlier import paths, and the deprecated estimator methods."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sklat
from sklat import control

PACKAGE = Path(sklat.__file__).parent


def _import_graph():
    """Module -> the package's modules it imports, wherever the import sits."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    edges.add(
                        f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                    )
            elif isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def _cycle(graph):
    """One import circle of ``graph`` as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_the_package_has_no_import_circle():
    graph = _import_graph()
    assert "sklat._estimator" in graph and "sklat.acquire._endpoint" in graph
    assert _cycle(graph) is None


def test_the_circle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize(
    "module",
    ["sklat.acquire", "sklat.io", "sklat.control", "sklat._cli", "sklat.profile", "sklat.serve"],
)
def test_the_measuring_side_imports_without_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules, 'skorch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_the_command_lines_defaults_are_the_estimators():
    from sklat._params import DEFAULTS

    assert DEFAULTS == sklat.LatencyEstimator().get_params()


def test_the_command_line_builds_its_parser_without_torch():
    code = (
        "import sys; from sklat.cli import build_parser; build_parser(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_earlier_import_paths_still_work():
    from sklat.acquire import profile_endpoint, profile_model, read_benchmark
    from sklat.io import read_benchmark as io_read_benchmark
    from sklat.profile import profile_endpoint as old_endpoint
    from sklat.profile import profile_model as old_model

    assert (old_model, old_endpoint, io_read_benchmark) == (
        profile_model,
        profile_endpoint,
        read_benchmark,
    )
    assert sklat.LatencyEstimator.__name__ == "LatencyEstimator"
    assert {"LatencyEstimator", "load", "save"} <= set(dir(sklat))
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        sklat.nothing  # noqa: B018


def test_deprecated_methods_warn_and_give_the_functions_results(fitted, small_data):
    d = small_data
    candidates = d.X.iloc[:6]
    with pytest.warns(FutureWarning, match=r"sklat.control.choose\(estimator"):
        old = fitted.choose(candidates, tpot_ms=8.0, min_attainment=0.5)
    new = control.choose(fitted, candidates, tpot_ms=8.0, min_attainment=0.5)
    assert old.index == new.index and old.met == new.met
    np.testing.assert_array_equal(old.attainment, new.attainment)
    rows = slice(0, 30)
    args = (d.X.iloc[rows], d.y.iloc[rows], d.output_tokens[rows])
    with pytest.warns(FutureWarning, match=r"sklat.control.check_drift\(estimator"):
        old = fitted.check_drift(*args, alpha=0.05)
    new = control.check_drift(fitted, *args, alpha=0.05)
    assert old.p_value == new.p_value and old.drift == new.drift


@pytest.mark.parametrize(
    "strategy, options, message",
    [
        ("position", {"positions": [1, 5]}, "positions= goes with strategy='max' only"),
        ("expectation", {"positions": [1, 5]}, "positions= goes with strategy='max' only"),
        ("max", {"position": 3}, "position= goes with strategy='position' only"),
        ("position", {"output_tokens_quantile": 0.9}, "output_tokens_quantile= goes with"),
        ("max", {"positions": [1], "output_tokens_quantile": 0.9}, "without positions="),
        (
            "max",
            {"positions": [1, 5], "output_tokens_distribution": [8, 16]},
            "output_tokens_distribution= is unused",
        ),
        (
            "position",
            {"position": 4, "output_tokens_distribution": [8, 16]},
            "output_tokens_distribution= is unused",
        ),
        ("most", {}, "strategy must be one of"),
    ],
)
def test_a_budget_option_its_strategy_does_not_use_is_refused(
    fitted, small_data, strategy, options, message
):
    with pytest.raises(ValueError, match=message):
        fitted.predict_budget(small_data.X.iloc[:2], strategy, **options)


def test_the_default_quantile_is_the_documented_one(fitted, small_data):
    X = small_data.X.iloc[:3]
    np.testing.assert_array_equal(
        fitted.predict_budget(X), fitted.predict_budget(X, output_tokens_quantile=0.95)
    )
    assert not np.array_equal(
        fitted.predict_budget(X), fitted.predict_budget(X, output_tokens_quantile=0.5)
    )


def test_the_calibration_owns_the_curve_it_calibrates(fitted, small_data):
    # One curve: the estimator's is its calibration's, also after a recalibration.
    import copy

    est = copy.deepcopy(fitted)
    assert est._curve is est._calibrator.curve
    d = small_data
    est.recalibrate(d.X.iloc[:40], d.y.iloc[:40] * 1.5, output_tokens=d.output_tokens[:40])
    assert est._curve is est._calibrator.curve and est._curve is not fitted._curve
    assert (est.cost_scales_ > 1.2).all()
