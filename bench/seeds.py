"""Run the notebook with other seeds and keep each model's validation and test figures, and the best
model that seed's run chose under the protocol (column best_model), in results/seeds.csv.

  python bench/seeds.py --data-dir DIR [--weights FILE] --seeds 7 2026

Each run writes to a temporary folder, never over the committed report; its rows replace earlier
rows of the same seed in results/seeds.csv, and the run is added to results/run_history.csv (every
full run scores the test set). The committed run (seed 42) adds its own rows when it runs, and the
report shows every seed's rows: the mean and range per model, and each seed's best model. Nothing is
selected among seeds. Rows written before the best_model column existed keep it empty.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import REPO, head_commit, record_run, run_notebook  # noqa: E402

SEED_TABLE = REPO / "results" / "seeds.csv"


def merge_seed_rows(table, rows, seed):
    """Write `rows` (one seed's rows) into the CSV at `table`, replacing that seed's earlier
    rows."""
    rows = rows[rows["seed"] == seed]
    if rows.empty:
        sys.exit(f"The run with seed {seed} wrote no rows for that seed; see its output above.")
    old = pd.read_csv(table) if Path(table).exists() else rows.iloc[:0]
    merged = pd.concat([old[old["seed"] != seed], rows]).sort_values(["seed", "model"])
    merged.to_csv(table, index=False)
    return merged


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--weights", default="")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    args = parser.parse_args()
    for seed in args.seeds:
        commit = head_commit()  # the code this run runs, whatever is committed while it runs
        with tempfile.TemporaryDirectory() as folder:
            metrics = run_notebook(
                {
                    "PNEUMONIA_SMOKE": "0",
                    "PNEUMONIA_SEED": str(seed),
                    "PNEUMONIA_DATA_DIR": args.data_dir,
                    "PNEUMONIA_VGG16_WEIGHTS": args.weights,
                },
                Path(folder),
            )
            rows = pd.read_csv(Path(folder) / "output" / "results" / "seeds.csv")
        record_run(
            metrics,
            f"seed {seed} of the final configuration, in a temporary folder (bench/seeds.py)",
            commit=commit,
        )
        print(merge_seed_rows(SEED_TABLE, rows, seed).to_string(index=False))


if __name__ == "__main__":
    main()
