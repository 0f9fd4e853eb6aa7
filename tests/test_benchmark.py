"""The README's tables are written by bench/benchmark.py from a metrics.json: check that writer on
the smoke run's metrics (nbmake runs the notebook before these tests); and bench/seeds.py's merge of
seed rows."""

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "benchmark.py"
README = """# Title

<!-- results:start -->
old results
<!-- results:end -->

text between

<!-- evidence:start -->
<!-- evidence:end -->

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
    assert f"| vgg16 | {metrics['gradcam']['vgg16']['val']['lung_share']:.3f} (" in text
    bench.update_readme(readme, metrics)
    assert readme.read_text() == text


def test_evidence_block_summarises_every_seed(bench, metrics):
    seeds = [
        {
            "seed": seed,
            "model": "vgg16",
            "val_auc": auc,
            "test_sensitivity": 0.9,
            "test_specificity": 0.8,
            "test_auc": auc,
        }
        for seed, auc in ((42, "0.95"), (7, "0.97"))
    ]
    row = (
        "| vgg16 | 0.960 (0.950–0.970) | 0.900 (0.900–0.900) | 0.800 (0.800–0.800) "
        "| 0.960 (0.950–0.970) |"
    )
    assert row in bench.evidence_table(metrics, seeds)


def test_verdict_follows_the_numbers(bench, metrics):
    best = metrics["best_model"]
    passing = json.loads(json.dumps(metrics))
    passing["models"][best]["test"].update(sensitivity=0.95, specificity=0.91)
    assert "meets the bar" in bench.verdict(passing) and "does not meet" not in bench.verdict(
        passing
    )
    failing = json.loads(json.dumps(metrics))
    failing["models"][best]["test"].update(sensitivity=0.99, specificity=0.89)
    assert "does not meet the bar" in bench.verdict(failing)


def test_readme_without_markers_is_a_clear_error(bench, metrics, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    with pytest.raises(SystemExit, match="no block <!-- results:start -->"):
        bench.update_readme(readme, metrics)


def test_seed_rows_replace_only_their_own_seed(tmp_path):
    sys.path.insert(0, str(BENCH.parent))
    from seeds import merge_seed_rows

    table = tmp_path / "seeds.csv"

    def rows(seed, auc):
        return pd.DataFrame({"seed": [seed, seed], "model": ["a", "b"], "test_auc": [auc, auc]})

    merge_seed_rows(table, rows(42, 0.9), 42)
    merge_seed_rows(table, rows(7, 0.8), 7)
    merged = merge_seed_rows(table, rows(7, 0.7), 7)
    assert sorted(zip(merged["seed"], merged["test_auc"], strict=True)) == [
        (7, 0.7),
        (7, 0.7),
        (42, 0.9),
        (42, 0.9),
    ]


def test_full_runs_are_recorded_in_the_run_history_and_smoke_runs_are_not(bench, metrics, tmp_path):
    history = tmp_path / "run_history.csv"
    history.write_text((BENCH.parent.parent / "results" / "run_history.csv").read_text())
    before = history.read_text().count("\n")
    with pytest.raises(SystemExit, match="Only full runs"):
        bench.record_run(metrics, "smoke", history)
    full = {**metrics, "mode": "full"}
    bench.record_run(full, "a change, with a comma", history)
    rows = list(csv.DictReader(history.open()))
    assert len(rows) == before and rows[-1]["changed_before_run"] == "a change, with a comma"
    assert int(rows[-1]["run"]) == int(rows[-2]["run"]) + 1
    assert rows[-1]["vgg16_auc"] == f"{metrics['models']['vgg16']['test']['auc']:.3f}"
