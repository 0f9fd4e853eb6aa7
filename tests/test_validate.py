"""bench/validate.py judges a change on validation data only: the notebook it runs stops at the
choice of the best model, scores no test set, and its rows keep what validation showed."""

import ast
import csv
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def validate():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("validate", BENCH / "validate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def calls(source):
    """Every function call of a source as (function name, first string argument or None)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            first = node.args[0] if node.args else None
            text = first.value if isinstance(first, ast.Constant) else None
            found.append((node.func.id, text))
    return found


def test_the_validation_notebook_stops_at_the_choice_and_scores_no_test_set(validate):
    notebook = validate.validation_notebook(["CNN_IMAGE_SIZE = 96"])
    sources = [cell.source for cell in notebook.cells]
    last = next(i for i, source in enumerate(sources) if validate.LAST_CELL in source)
    configuration = next(i for i, s in enumerate(sources) if validate.CONFIGURATION_CELL in s)
    assert sources[configuration + 1] == "CNN_IMAGE_SIZE = 96"  # the override runs after it
    scored = {text for source in sources for name, text in calls(source) if name == "score_split"}
    assert scored == {"val"}
    for source in sources[last + 1 : -1]:  # later cells: definitions only
        for node in ast.parse(source).body:
            assert isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))
    assert "validation.json" in sources[-1]


def evidence():
    models = {}
    for index, name in enumerate(("small_cnn", "deep_cnn", "vgg16", "ensemble")):
        models[name] = {
            "auc": 0.95 + index / 100,
            "auc_ci": [0.94, 0.99],
            "sensitivity": 0.951,
            "specificity": 0.9,
            "epochs_run": 0 if name == "ensemble" else 7,
            "best_epoch": 0 if name == "ensemble" else 4,
            "seconds": 123.4,
            "val_losses": []
            if name == "ensemble"
            else [9.0 if name == "vgg16" else 0.5, 0.3, 2.5, 0.2],
            "final_stage_start": 1 if name == "vgg16" else 0,
        }
    return {
        "seed": 42,
        "best_model": "ensemble",
        "reference_speed_ms": 12.34,
        "timings": {"total": 600.0},
        "models": models,
    }


def test_a_recorded_run_keeps_its_figures_and_the_commit_it_ran(validate, tmp_path):
    history = tmp_path / "validation_history.csv"
    history.write_text("date,code_commit,change,decision,old_column\n2026-01-01,abc,x,y,z\n")
    validate.record(evidence(), "a change", "kept", history=history, commit="1234567")
    rows = list(csv.DictReader(history.open()))
    assert rows[0]["old_column"] == "z" and rows[1]["old_column"] == ""  # earlier rows kept
    row = rows[1]
    assert (row["code_commit"], row["change"], row["decision"]) == ("1234567", "a change", "kept")
    assert row["vgg16_val_auc"] == "0.9700" and row["vgg16_val_auc_low"] == "0.9400"
    assert row["deep_cnn_epochs_run"] == "7" and row["deep_cnn_best_epoch"] == "4"
    assert row["reference_speed_ms"] == "12.3" and row["wall_minutes"] == "10.0"
    assert row["deep_cnn_best_val_loss"] == "0.2000"
    assert row["deep_cnn_highest_val_loss"] == "2.5000"  # every epoch of a one-stage model
    assert row["vgg16_highest_val_loss"] == "2.5000"  # of fine-tuning: not the head's epoch 1
    assert "ensemble_epochs_run" not in row
