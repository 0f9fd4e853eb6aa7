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


READABLE = {
    "small_cnn": "small CNN",
    "deep_cnn": "deep CNN",
    "vgg16": "VGG16",
    "ensemble": "ensemble",
}


def evidence_row(metrics, name):
    """The evidence block's row of one candidate, from metrics.json."""
    worst, occlusion = metrics["worst_case"][name], metrics["occlusion"][name]
    gradcam = metrics["gradcam"].get(name)
    share = (
        f"{gradcam['val']['lung_share']:.3f} / {gradcam['test']['lung_share']:.3f}"
        if gradcam
        else "–"
    )
    best = " (best)" if name == metrics["best_model"] else ""
    return (
        f"| {READABLE[name]}{best} | {worst['val_specificity']:.3f} | {worst['val_auc']:.3f} | "
        f"{occlusion['val_auc_lungs_blanked']:.3f} | {occlusion['val_auc_lungs_only']:.3f} | "
        f"{share} |"
    )


def block(text, name):
    return text.split(f"<!-- {name}:start -->")[1].split(f"<!-- {name}:end -->")[0]


def test_readme_blocks_are_filled_from_metrics_and_rewriting_is_stable(bench, metrics, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    bench.update_readme(readme, metrics)
    text = readme.read_text()
    assert "old results" not in text and "text between" in text
    best = metrics["best_model"]
    chosen = metrics["models"][best]["test"]
    low, high = chosen["auc_ci"]
    results = block(text, "results")
    assert (
        f"| {READABLE[best]} (best) | {metrics['models'][best]['val']['auc']:.3f} | "
        f"{chosen['auc']:.3f} ({low:.3f}–{high:.3f}) |" in results
    )
    assert "95 % patient-bootstrap" in results and "Wilson" not in results
    assert metrics["interval_method"] in results
    assert (
        f"best model under the protocol (chosen on validation data only), {READABLE[best]},"
        in results
    )
    holm = metrics["mcnemar"]["p_holm"]
    assert f"Holm-adjusted over the 3 film groups: {holm['all']:.3f} (all)" in results
    evidence = block(text, "evidence")
    for name in ("small_cnn", "deep_cnn", "vgg16", "ensemble"):
        assert evidence_row(metrics, name) in evidence
    assert f"chosen: {READABLE[best]}." in evidence
    assert "| deep CNN | " in block(text, "label-free")
    assert f"| total | {metrics['timings']['total']:.1f} |" in block(text, "timings")
    bench.update_readme(readme, metrics)
    assert readme.read_text() == text


def test_evidence_rows_show_the_worst_case_and_the_occlusion(bench, metrics):
    changed = json.loads(json.dumps(metrics))
    changed["worst_case"]["vgg16"].update(val_specificity=0.1234, val_auc=0.5678)
    changed["occlusion"]["vgg16"].update(val_auc_lungs_blanked=0.25, val_auc_lungs_only=0.875)
    changed["gradcam"]["vgg16"]["val"]["lung_share"] = 0.5
    changed["gradcam"]["vgg16"]["test"]["lung_share"] = 0.625
    best = " (best)" if metrics["best_model"] == "vgg16" else ""
    table = bench.evidence_table(changed, None)
    assert f"| VGG16{best} | 0.123 | 0.568 | 0.250 | 0.875 | 0.500 / 0.625 |" in table
    assert "Over seeds" not in table


def test_tables_of_a_metrics_file_of_an_older_notebook_are_a_clear_error(bench, metrics, tmp_path):
    older = {
        key: value for key, value in metrics.items() if key not in ("stress_tests", "occlusion")
    }
    readme = tmp_path / "README.md"
    readme.write_text(README)
    with pytest.raises(SystemExit, match="no stress_tests, occlusion: it was written by an older"):
        bench.update_readme(readme, older)
    assert readme.read_text() == README


def test_evidence_block_summarises_every_seed(bench, metrics):
    seeds = [
        {
            "seed": seed,
            "model": "vgg16",
            "best_model": best,
            "val_auc": auc,
            "test_sensitivity": 0.9,
            "test_specificity": 0.8,
            "test_auc": auc,
        }
        for seed, auc, best in ((42, "0.95", "deep_cnn"), (7, "0.97", "vgg16"))
    ]
    # a row of seeds.csv from before it had a best_model column
    seeds.append({**seeds[0], "seed": 3, "best_model": "", "val_auc": "0.96", "test_auc": "0.96"})
    row = (
        "| VGG16 | 0.960 (0.950–0.970) | 0.900 (0.900–0.900) | 0.800 (0.800–0.800) "
        "| 0.960 (0.950–0.970) |"
    )
    table = bench.evidence_table(metrics, seeds)
    assert "Over seeds 3, 7, 42 " in table and row in table
    assert "Best model under the protocol, per seed: seed 7: VGG16; seed 42: deep CNN." in table


def test_seed_rows_follow_the_notebooks_order_of_models(bench, metrics):
    row = {"val_auc": "0.95", "test_sensitivity": 0.9, "test_specificity": 0.8, "test_auc": "0.95"}
    # seeds.csv is sorted by name: deep_cnn and ensemble come before small_cnn and vgg16 there
    seeds = [
        {**row, "seed": seed, "model": model, "best_model": "vgg16"}
        for seed in (7, 42)
        for model in ("deep_cnn", "ensemble", "small_cnn", "vgg16")
    ]
    table = bench.evidence_table(metrics, seeds)
    starts = [table.index(f"| {READABLE[name]} | 0.950") for name in READABLE]
    assert starts == sorted(starts)


def test_a_single_seed_is_named_not_summarised_as_a_range(bench, metrics):
    seeds = [
        {
            "seed": 42,
            "model": "vgg16",
            "best_model": "vgg16",
            "val_auc": "0.95",
            "test_sensitivity": 0.9,
            "test_specificity": 0.8,
            "test_auc": "0.95",
        }
    ]
    table = bench.evidence_table(metrics, seeds)
    assert "Seeds: only seed 42 has run so far" in table
    assert "Over seeds" not in table and "(0.950–0.950)" not in table


def test_a_best_model_alone_is_no_tie_and_a_real_tie_names_every_candidate(bench, metrics):
    alone = json.loads(json.dumps(metrics))
    alone["model_choice"]["tied"] = [alone["best_model"]]
    assert "; no tie; chosen:" in bench.evidence_table(alone, None)
    tied = json.loads(json.dumps(metrics))
    tied["model_choice"]["tied"] = ["vgg16", "ensemble"]
    table = bench.evidence_table(tied, None)
    assert "tied within the tolerance: VGG16, ensemble; chosen:" in table
    assert "no tie" not in table


def test_readme_tables_name_sections_and_stresses_without_underscores(bench, metrics):
    timings = bench.timing_table(metrics)
    assert "| small CNN |" in timings and "_" not in timings
    listed = bench.evidence_table(metrics, None).split("acquisition stresses (")[1].split(")")[0]
    stresses = [key for key in next(iter(metrics["stress_tests"].values())) if key != "none"]
    assert listed.split(", ") == [key.replace("_", " ") for key in stresses]


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
