"""Judge a change on validation data only, before any full run scores the test set.

  python bench/validate.py --data-dir DIR [--weights FILE] [--seed N] [--output DIR]

Runs the notebook's code cells up to the choice of the best model (data, split, training, thresholds),
then the definitions of its later cells, then measures on random validation films what the report's analyses measure:
each model's validation AUC and operating point, the lung share of its Grad-CAM heat, and the
shortcut probe's validation AUC. Nothing is predicted on the test set. Writes validation.json under
the output folder (a temporary folder by default, never the committed report) and prints it; with
--record CHANGE DECISION it also adds a row to results/validation_history.csv.
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

HISTORY = REPO / "results" / "validation_history.csv"   # every validation-only run (none scores the test set)
LAST_CELL = "BEST_MODEL = min(tied"      # the choice of the best model on validation data
VALIDATION_EVIDENCE = '''
cam_films = {"val": random_films(val_images, GRADCAM_FILMS, SEED)}
masks = {"val": film_masks(cam_films["val"])}
evidence = {"seed": SEED, "best_model": BEST_MODEL, "timings": timings,
            "models": {name: {**entry["val"], "threshold": entry["threshold"]} for name, entry in models.items()},
            "lung_share": {name: {"val": mean_lung_share([models[name]], cam_films["val"], masks["val"])}
                           for name in ENSEMBLE_MEMBERS},
            "mask_failures": int(sum(not found for _, found in masks["val"])),
            "mean_region_fraction": float(np.mean([mask.mean() for mask, found in masks["val"] if found])),
            "shortcut_probe": shortcut_probe(cnn_datasets, ("val",), PROBE_THUMBNAIL)}
(RESULT_DIR / "validation.json").write_text(json.dumps(to_json_ready(evidence), indent=2))
'''


def definitions(source):
    """The imports, functions and classes (with their decorators) of a cell's code."""
    lines = source.splitlines()
    return "\n\n".join("\n".join(lines[min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1:
                                        node.end_lineno])
                       for node in ast.parse(source).body
                       if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)))


def validation_notebook():
    """The notebook's code cells up to LAST_CELL, the definitions of its later cells, and the evidence cell."""
    cells, reached = [], False
    for cell in nbformat.read(REPO / "pneumonia_cnn.ipynb", as_version=4).cells:
        if cell.cell_type == "code":
            cells.append(cell if not reached else nbformat.v4.new_code_cell(definitions(cell.source)))
        reached = reached or LAST_CELL in cell.source
    if not reached:
        sys.exit(f"No cell with '{LAST_CELL}' in the notebook: update LAST_CELL in {__file__}.")
    return nbformat.v4.new_notebook(cells=cells + [nbformat.v4.new_code_cell(VALIDATION_EVIDENCE)])


def record(evidence, change, decision, history=HISTORY, commit=None):
    """Append one validation-only run to the history: what changed, each model's validation AUC and lung share, the
    masks and the probe, and what was decided from it."""
    commit = commit or head_commit()
    row = {"date": time.strftime("%Y-%m-%d"), "code_commit": commit, "seed": evidence["seed"], "change": change,
           **{f"{name}_val_auc": f"{evidence['models'][name]['auc']:.4f}" for name in MODELS},
           **{f"{name}_val_lung_share": f"{share['val']['lung_share']:.3f}" for name, share in evidence["lung_share"].items()},
           "mean_region_fraction": f"{evidence['mean_region_fraction']:.3f}", "mask_failures": evidence["mask_failures"],
           "probe_val_auc": f"{evidence['shortcut_probe']['val_auc']:.3f}", "decision": decision}
    new = not Path(history).exists()
    with open(history, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--weights", default="")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", default="")
    parser.add_argument("--record", nargs=2, metavar=("CHANGE", "DECISION"),
                        help="add the run to results/validation_history.csv with what changed and what was decided")
    args = parser.parse_args()
    output = Path(args.output or tempfile.mkdtemp(prefix="pneumonia_validate_")).resolve()
    os.environ.update({"PNEUMONIA_DATA_DIR": str(Path(args.data_dir).resolve()), "PNEUMONIA_OUTPUT_DIR": str(output),
                       "PNEUMONIA_SEED": str(args.seed), "PNEUMONIA_SMOKE": os.environ.get("PNEUMONIA_SMOKE", "0")})
    if args.weights:
        os.environ["PNEUMONIA_VGG16_WEIGHTS"] = str(Path(args.weights).resolve())
    notebook = validation_notebook()
    NotebookClient(notebook, timeout=None, resources={"metadata": {"path": str(REPO)}}).execute()
    nbformat.write(notebook, output / "validation.ipynb")
    evidence = json.loads((output / "results" / "validation.json").read_text())
    print(json.dumps(evidence, indent=2))
    if args.record:
        record(evidence, *args.record)


if __name__ == "__main__":
    main()
