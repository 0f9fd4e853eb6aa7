"""The README's tables are written by bench/benchmark.py from a metrics.json: check that writer on
the smoke run's metrics (nbmake runs the notebook before these tests), on a README written here,
never the real one; and bench/seeds.py's merge of seed rows."""

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

<!-- seeds:start -->
<!-- seeds:end -->

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


READABLE = {
    "small_cnn": "small CNN",
    "deep_cnn": "deep CNN",
    "vgg16": "VGG16",
    "ensemble": "ensemble",
}


def block(text, name):
    return text.split(f"<!-- {name}:start -->")[1].split(f"<!-- {name}:end -->")[0]


def test_readme_blocks_are_filled_from_metrics_and_rewriting_is_stable(bench, metrics, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    bench.update_readme(readme, metrics)
    text = readme.read_text()
    assert "old results" not in text and "text between" in text
    best = metrics["best_model"]
    entry = metrics["models"][best]
    low, high = entry["test"]["auc_ci"]
    results = block(text, "results")
    assert f"| {READABLE[best]} (best) | {entry['threshold']:.3f} | " in results
    assert f"| {entry['test']['auc']:.3f} [{low:.3f}, {high:.3f}] |" in results
    assert "internal test specificity" in results and metrics["interval_method"] in results
    assert "best model under the protocol, chosen on validation data only" in results
    assert "Seeds: no seed of this configuration has run so far" in block(text, "seeds")
    timings = block(text, "timings")
    assert f"| total | {metrics['timings']['total']:.1f} |" in timings
    assert f"{metrics['reference_speed']['ms_per_image']:.1f} ms per image" in timings
    bench.update_readme(readme, metrics)
    assert readme.read_text() == text


def test_tables_of_a_metrics_file_of_an_older_notebook_are_a_clear_error(bench, metrics, tmp_path):
    older = json.loads(json.dumps(metrics))
    del older["reference_speed"]
    for entry in older["models"].values():
        del entry["internal_test"]
    readme = tmp_path / "README.md"
    readme.write_text(README)
    with pytest.raises(SystemExit, match="no reference_speed, models' internal_test figures"):
        bench.update_readme(readme, older)
    assert readme.read_text() == README


def seed_rows(seeds, models=("vgg16",), best="vgg16", specificity=0.8):
    return [
        {
            "seed": seed,
            "model": model,
            "best_model": best,
            "internal_test_sensitivity": 0.97,
            "internal_test_specificity": specificity,
            "test_sensitivity": 0.9,
            "test_specificity": specificity,
            "test_auc": "0.95",
        }
        for seed in seeds
        for model in models
    ]


def test_seed_table_summarises_every_seed_of_this_configuration(bench):
    seeds = seed_rows([42], best="deep_cnn", specificity=0.7) + seed_rows([7], specificity=0.9)
    # a row of an older notebook, without internal test figures, is left out
    seeds.append({"seed": 3, "model": "vgg16", "best_model": "vgg16", "test_auc": "0.5"})
    table = bench.seed_table(seeds)
    assert "Over seeds 7, 42 " in table
    assert "| VGG16 | 0.970 (0.970–0.970) | 0.800 (0.700–0.900) |" in table
    assert "Best model under the protocol, per seed: seed 7: VGG16; seed 42: deep CNN." in table
    assert "0.500" not in table


def test_seed_rows_follow_the_notebooks_order_of_models(bench):
    # seeds.csv may be sorted by name: deep_cnn and ensemble come before small_cnn and vgg16
    table = bench.seed_table(seed_rows([7, 42], ("deep_cnn", "ensemble", "small_cnn", "vgg16")))
    starts = [table.index(f"| {READABLE[name]} | 0.970") for name in READABLE]
    assert starts == sorted(starts)


def test_a_single_seed_is_named_not_summarised_as_a_range(bench):
    table = bench.seed_table(seed_rows([42]))
    assert "Seeds: only seed 42 of this configuration" in table
    assert "Over seeds" not in table and "(0.970–0.970)" not in table


def test_timing_sections_are_named_without_underscores(bench, metrics):
    timings = bench.timing_table(metrics)
    assert "| small CNN |" in timings and "| test evaluation |" in timings
    assert "_" not in timings


def test_verdict_follows_the_numbers_on_each_test_set(bench, metrics):
    best = metrics["best_model"]
    changed = json.loads(json.dumps(metrics))
    changed["models"][best]["internal_test"].update(sensitivity=0.95, specificity=0.91)
    changed["models"][best]["test"].update(sensitivity=0.99, specificity=0.89)
    text = bench.verdict(changed)
    assert "on the internal test it meets the target in its point estimates (0.950 / 0.910)" in text
    assert "on the official test it misses the target (0.990 / 0.890)" in text


def test_verdict_names_a_tie_and_a_clear_leader(bench, metrics):
    changed = json.loads(json.dumps(metrics))
    changed["best_model"] = "ensemble"
    changed["model_choice"].update(leader="vgg16", tied=["vgg16", "deep_cnn", "ensemble"])
    text = bench.verdict(changed)
    assert "VGG16 had the highest validation AUC, but validation could not separate it from" in text
    assert "deep CNN, ensemble; the protocol takes ensemble" in text
    changed["best_model"] = "vgg16"
    changed["model_choice"]["tied"] = ["vgg16"]
    assert "VGG16 had the highest validation AUC, clearly ahead" in bench.verdict(changed)


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
    for unfixed in ("PROTOCOL_COMMIT_PLACEHOLDER", "0000000"):  # not a commit; not an ancestor
        full["protocol"] = {**metrics["protocol"], "commit": unfixed}
        with pytest.raises(SystemExit, match="protocol commit"):
            bench.record_run(full, "a run before its protocol was committed", history)
    full["protocol"] = {**metrics["protocol"], "commit": bench.head_commit()}
    bench.record_run(full, "a change, with a comma", history)
    rows = list(csv.DictReader(history.open()))
    assert len(rows) == before and rows[-1]["changed_before_run"] == "a change, with a comma"
    assert int(rows[-1]["run"]) == int(rows[-2]["run"]) + 1
    assert rows[-1]["vgg16_auc"] == f"{metrics['models']['vgg16']['test']['auc']:.3f}"
    internal = metrics["models"]["vgg16"]["internal_test"]["specificity"]
    assert rows[-1]["vgg16_internal_specificity"] == f"{internal:.3f}"
    assert float(rows[-1]["reference_speed_ms"]) > 0
    assert rows[-1]["best_model"] == metrics["best_model"]
    assert rows[-1]["protocol_commit"] == bench.head_commit() and rows[0]["protocol_commit"] == ""
    assert rows[-1]["code_commit"] == bench.head_commit()
    bench.record_run(full, "a run whose code was committed before it started", history, "abc1234")
    assert list(csv.DictReader(history.open()))[-1]["code_commit"] == "abc1234"


def test_seed_rows_with_a_best_model_join_older_rows_without_one(tmp_path):
    sys.path.insert(0, str(BENCH.parent))
    from seeds import merge_seed_rows

    table = tmp_path / "seeds.csv"
    pd.DataFrame({"seed": [7], "model": ["vgg16"], "test_auc": [0.9]}).to_csv(table, index=False)
    rows = pd.DataFrame(
        {"seed": [42], "model": ["vgg16"], "best_model": ["deep_cnn"], "test_auc": [0.8]}
    )
    merge_seed_rows(table, rows, 42)
    written = list(csv.DictReader(table.open()))
    assert [(row["seed"], row["best_model"]) for row in written] == [("7", ""), ("42", "deep_cnn")]
