"""The scripts under examples/ run and do what they say."""

import runpy
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(autouse=True)
def restore_sklearn_config():
    import sklearn

    with sklearn.config_context():
        yield


def test_plot_learnt_curve(tmp_path, monkeypatch, capsys):
    out = tmp_path / "curve.png"
    monkeypatch.setattr(sys, "argv", ["plot_learnt_curve.py", str(out)])
    runpy.run_path(str(EXAMPLES / "plot_learnt_curve.py"), run_name="__main__")
    assert out.stat().st_size > 10_000
    text = capsys.readouterr().out
    error = float(text.split("curve: ")[1].split("%")[0])
    assert error < 5.0


def test_grid_search_example(capsys):
    runpy.run_path(str(EXAMPLES / "grid_search_loss_weights.py"), run_name="__main__")
    assert "best:" in capsys.readouterr().out


def test_budget_example(capsys):
    runpy.run_path(str(EXAMPLES / "budget_check.py"), run_name="__main__")
    assert "configurations fit 40.0 ms/token" in capsys.readouterr().out
