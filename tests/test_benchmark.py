"""The README's tables are written by bench/benchmark.py from a metrics.json: check that writer on the
smoke run's metrics (nbmake runs the notebook before these tests)."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "benchmark.py"
README = """# Title

<!-- results:start -->
old results
<!-- results:end -->

text between

<!-- label-free:start -->
<!-- label-free:end -->

<!-- timings:start -->
| section | seconds |
<!-- timings:end -->
"""


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_blocks_are_filled_from_metrics_and_rewriting_is_stable(bench, metrics, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    bench.update_readme(readme, metrics)
    text = readme.read_text()
    assert "old results" not in text and "text between" in text
    best = metrics["best_model"]
    assert f"| {best} (best) | {metrics['models'][best]['val']['auc']:.4f} |" in text
    assert f"best model on validation data, {best}," in text
    assert "| deep_cnn | " in text.split("<!-- label-free:start -->")[1]
    assert f"| total | {metrics['timings']['total']:.1f} |" in text
    bench.update_readme(readme, metrics)
    assert readme.read_text() == text


def test_verdict_follows_the_numbers(bench, metrics):
    best = metrics["best_model"]
    passing = json.loads(json.dumps(metrics))
    passing["models"][best]["test"].update(sensitivity=0.95, specificity=0.91)
    assert "meets the bar" in bench.verdict(passing) and "does not meet" not in bench.verdict(passing)
    failing = json.loads(json.dumps(metrics))
    failing["models"][best]["test"].update(sensitivity=0.99, specificity=0.89)
    assert "does not meet the bar" in bench.verdict(failing)


def test_readme_without_markers_is_a_clear_error(bench, metrics, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    with pytest.raises(SystemExit, match="no block <!-- results:start -->"):
        bench.update_readme(readme, metrics)
