"""Time the notebook end to end and print seconds per section and per model.

  python bench/benchmark.py --smoke                      # smoke mode on generated data
  python bench/benchmark.py --data-dir DIR [--weights F] # full run on the real data
  python bench/benchmark.py --table results/metrics.json # tables of an earlier run (README)

Runs write to a temporary folder, never over the committed report.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_notebook(env_overrides, workdir):
    env = {**os.environ, **env_overrides, "PNEUMONIA_OUTPUT_DIR": str(workdir / "output")}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                    "--ExecutePreprocessor.timeout=-1", "--output", str(workdir / "executed.ipynb"),
                    str(REPO / "pneumonia_cnn.ipynb")], env=env, check=True)
    print(f"wall time including kernel start: {time.perf_counter() - started:.1f} s")
    return json.loads((workdir / "output" / "results" / "metrics.json").read_text())


def timing_table(metrics):
    rows = [f"| {section} | {seconds:.1f} |" for section, seconds in metrics["timings"].items()]
    return "\n".join([f"Hardware: {metrics['hardware']}; mode: {metrics['mode']}", "",
                      "| section | seconds |", "|---|---|", *rows])


def results_table(metrics):
    rows = []
    for name, entry in metrics["models"].items():
        half, chosen = entry["test_at_0.5"], entry["test"]
        best = " (best)" if name == metrics["best_model"] else ""
        rows.append(f"| {name}{best} | {entry['val']['auc']:.4f} | {chosen['auc']:.4f} | "
                    f"{half['sensitivity']:.3f} / {half['specificity']:.3f} | {entry['threshold']:.3f} | "
                    f"{chosen['sensitivity']:.3f} ({chosen['sensitivity_ci'][0]:.3f}–{chosen['sensitivity_ci'][1]:.3f}) | "
                    f"{chosen['specificity']:.3f} ({chosen['specificity_ci'][0]:.3f}–{chosen['specificity_ci'][1]:.3f}) | "
                    f"{entry['train_seconds']:.0f} |")
    return "\n".join(["| model | val AUC | test AUC | test sens / spec at 0.5 | threshold (val) | "
                      "test sensitivity (95% CI) | test specificity (95% CI) | train s |",
                      "|---|---|---|---|---|---|---|---|", *rows])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--smoke", action="store_true", help="smoke mode on a generated data set")
    mode.add_argument("--data-dir", help="full run on this data folder")
    mode.add_argument("--table", help="print the tables of an existing metrics.json")
    parser.add_argument("--weights", default=os.environ.get("PNEUMONIA_VGG16_WEIGHTS", ""),
                        help="VGG16 notop weights file for offline machines")
    args = parser.parse_args()
    if args.table:
        metrics = json.loads(Path(args.table).read_text())
    else:
        with tempfile.TemporaryDirectory() as folder:
            workdir = Path(folder)
            if args.smoke:
                sys.path.insert(0, str(REPO / "tests"))
                import synthetic
                synthetic.make_tree(workdir / "data" / "chest_xray", val=True)
                overrides = {"PNEUMONIA_SMOKE": "1", "PNEUMONIA_DATA_DIR": str(workdir / "data")}
            else:
                overrides = {"PNEUMONIA_SMOKE": "0", "PNEUMONIA_DATA_DIR": args.data_dir,
                             "PNEUMONIA_VGG16_WEIGHTS": args.weights}
            metrics = run_notebook(overrides, workdir)
    print(timing_table(metrics))
    print()
    print(results_table(metrics))


if __name__ == "__main__":
    main()
