"""Judge a change on validation data only, before any full run scores a test set.

  python bench/validate.py --data-dir DIR [--weights FILE] [--seed N] [--output DIR]
                           [--set NAME=VALUE ...] [--record CHANGE DECISION]
  python bench/validate.py --from-json OUTPUT/results/validation.json --record CHANGE DECISION

Runs the notebook's code cells up to the choice of the best model (data, split, training,
thresholds, the choice), then the definitions of its later cells, and keeps what validation shows:
each model's validation AUC with its patient-bootstrap interval, its operating point, its epochs
and training time, the best model under the protocol, and the machine's reference speed. --set
overrides configuration constants (a change judged against the committed configuration). Nothing is
predicted on the internal or the official test set.
Writes validation.json under the output folder (a temporary folder by default, never the committed
report) and prints it; with --record CHANGE DECISION it also adds a row to
results/validation_history.csv.
"""

import argparse
import ast
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import MODELS, REPO, head_commit  # noqa: E402

# every validation-only run (none scores the test set)
HISTORY = REPO / "results" / "validation_history.csv"
LAST_CELL = "BEST_MODEL, TIED = choose_model("  # the protocol's choice on validation
CONFIGURATION_CELL = "CNN_IMAGE_SIZE ="  # --set assignments run right after this cell
VALIDATION_EVIDENCE = """
timings["total"] = round(time.perf_counter() - RUN_STARTED, 1)
evidence = {
    "seed": SEED,
    "best_model": BEST_MODEL,
    "tied": TIED,
    "reference_speed_ms": REFERENCE_SPEED,
    "timings": timings,
    "models": {
        name: {
            **entry["val"],
            "image_size": entry["image_size"],
            "epochs_run": entry["epochs_run"],
            "best_epoch": entry["best_epoch"],
            "seconds": entry["seconds"],
            # per epoch (VGG16's two stages joined; the ensemble trains nothing)
            "val_losses": entry["history"]["val_loss"] if "history" in entry else [],
            "final_stage_start": entry.get("warmup_epochs", 0),  # VGG16: its head-only epochs
        }
        for name, entry in models.items()
    },
}
(RESULT_DIR / "validation.json").write_text(json.dumps(to_json_ready(evidence), indent=2))
"""


def definitions(source):
    """The imports, functions and classes (with their decorators) of a cell's code."""
    lines = source.splitlines()
    return "\n\n".join(
        "\n".join(
            lines[
                min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
                - 1 : node.end_lineno
            ]
        )
        for node in ast.parse(source).body
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))
    )


def validation_notebook(overrides=()):
    """The notebook's code cells up to LAST_CELL (with the --set assignments after the
    configuration), the definitions of its later cells, and the evidence cell."""
    cells, reached = [], False
    for cell in nbformat.read(REPO / "pneumonia_cnn.ipynb", as_version=4).cells:
        if cell.cell_type != "code":
            continue
        cells.append(cell if not reached else nbformat.v4.new_code_cell(definitions(cell.source)))
        if CONFIGURATION_CELL in cell.source and overrides:
            cells.append(nbformat.v4.new_code_cell("\n".join(overrides)))
        reached = reached or LAST_CELL in cell.source
    if not reached:
        sys.exit(f"No cell with '{LAST_CELL}' in the notebook: update LAST_CELL in {__file__}.")
    return nbformat.v4.new_notebook(cells=cells + [nbformat.v4.new_code_cell(VALIDATION_EVIDENCE)])


def history_row(evidence, change, decision, commit):
    """One validation-only run: what changed, each candidate's validation AUC, operating point,
    epochs, training time and validation loss (best and highest of its last training stage), the
    best model, the machine's speed, and the decision."""
    row = {"date": time.strftime("%Y-%m-%d"), "code_commit": commit, "seed": evidence["seed"]}
    row.update(change=change, best_model=evidence["best_model"])
    row["reference_speed_ms"] = f"{evidence['reference_speed_ms']:.1f}"
    row["wall_minutes"] = f"{evidence['timings']['total'] / 60:.1f}"
    for name in MODELS:
        figures = evidence["models"][name]
        row[f"{name}_val_auc"] = f"{figures['auc']:.4f}"
        row[f"{name}_val_auc_low"] = f"{figures['auc_ci'][0]:.4f}"
        row[f"{name}_val_sensitivity"] = f"{figures['sensitivity']:.3f}"
        row[f"{name}_val_specificity"] = f"{figures['specificity']:.3f}"
        if name != "ensemble":
            row[f"{name}_epochs_run"] = figures["epochs_run"]
            row[f"{name}_best_epoch"] = figures["best_epoch"]
            row[f"{name}_train_seconds"] = round(figures["seconds"])
            if "val_losses" in figures:  # runs before these columns recorded no losses
                losses = figures["val_losses"][figures["final_stage_start"] :]
                row[f"{name}_best_val_loss"] = f"{min(losses):.4f}"
                row[f"{name}_highest_val_loss"] = f"{max(losses):.4f}"  # of the last stage
    row["decision"] = decision
    return row


def record(evidence, change, decision, history=HISTORY, commit=None):
    """Add one run to the history; earlier rows keep their columns (blank where they had none)."""
    row = history_row(evidence, change, decision, commit or head_commit())
    rows = list(csv.DictReader(open(history))) if Path(history).exists() else []
    columns = list(dict.fromkeys([*(rows[0] if rows else {}), *row]))
    with open(history, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows([*rows, row])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default="", help="the data folder (not needed with --from-json)"
    )
    parser.add_argument("--weights", default="")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", default="")
    parser.add_argument(
        "--record",
        nargs=2,
        metavar=("CHANGE", "DECISION"),
        help="add the run to results/validation_history.csv with what changed and what was decided",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a configuration constant, e.g. LUNG_EMPHASIS_PROBABILITY=0",
    )
    parser.add_argument(
        "--from-json",
        default="",
        help="record the evidence of an earlier run (its validation.json) instead of running",
    )
    parser.add_argument(
        "--commit",
        default="",
        help="with --from-json: the commit whose code the run ran (default: the checked-out one)",
    )
    args = parser.parse_args()
    if args.from_json:
        if not args.record:
            sys.exit("--from-json needs --record CHANGE DECISION.")
        evidence = json.loads(Path(args.from_json).read_text())
        record(evidence, *args.record, commit=args.commit or None)
        return
    if not args.data_dir:
        sys.exit("Give --data-dir DIR (the folder with train/ and test/), or --from-json FILE.")
    output = Path(args.output or tempfile.mkdtemp(prefix="pneumonia_validate_")).resolve()
    os.environ.update(
        {
            "PNEUMONIA_DATA_DIR": str(Path(args.data_dir).resolve()),
            "PNEUMONIA_OUTPUT_DIR": str(output),
            "PNEUMONIA_SEED": str(args.seed),
            "PNEUMONIA_SMOKE": os.environ.get("PNEUMONIA_SMOKE", "0"),
        }
    )
    if args.weights:
        os.environ["PNEUMONIA_VGG16_WEIGHTS"] = str(Path(args.weights).resolve())
    commit = head_commit()  # the code this run runs, whatever is committed while it runs
    notebook = validation_notebook(args.set)
    NotebookClient(notebook, timeout=None, resources={"metadata": {"path": str(REPO)}}).execute()
    nbformat.write(notebook, output / "validation.ipynb")
    evidence = json.loads((output / "results" / "validation.json").read_text())
    print(json.dumps(evidence, indent=2))
    if args.record:
        record(evidence, *args.record, commit=commit)


if __name__ == "__main__":
    main()
