"""Time the notebook end to end and print seconds per section and per model.

  python bench/benchmark.py --smoke                      # smoke mode on generated data
  python bench/benchmark.py --data-dir DIR [--weights F] # full run on the real data
  python bench/benchmark.py --table results/metrics.json # tables of an earlier run
  python bench/benchmark.py --table results/metrics.json --readme README.md
                                          # ... and write them into the README's marked blocks

Runs write to a temporary folder, never over the committed report.
"""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_notebook(env_overrides, workdir):
    env = {**os.environ, **env_overrides, "PNEUMONIA_OUTPUT_DIR": str(workdir / "output")}
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--ExecutePreprocessor.timeout=-1",
            "--output",
            str(workdir / "executed.ipynb"),
            str(REPO / "pneumonia_cnn.ipynb"),
        ],
        env=env,
        check=True,
    )
    print(f"wall time including kernel start: {time.perf_counter() - started:.1f} s")
    return json.loads((workdir / "output" / "results" / "metrics.json").read_text())


def timing_table(metrics):
    rows = [f"| {section} | {seconds:.1f} |" for section, seconds in metrics["timings"].items()]
    return "\n".join(["| section | seconds |", "|---|---|", *rows])


def results_table(metrics):
    rows = []
    for name, entry in metrics["models"].items():
        half, chosen = entry["test_at_0.5"], entry["test"]
        best = " (best)" if name == metrics["best_model"] else ""
        sens_low, sens_high = chosen["sensitivity_ci"]
        spec_low, spec_high = chosen["specificity_ci"]
        rows.append(
            f"| {name}{best} | {entry['val']['auc']:.4f} | {chosen['auc']:.4f} | "
            f"{half['sensitivity']:.3f} / {half['specificity']:.3f} | {entry['threshold']:.3f} | "
            f"{chosen['sensitivity']:.3f} ({sens_low:.3f}–{sens_high:.3f}) | "
            f"{chosen['specificity']:.3f} ({spec_low:.3f}–{spec_high:.3f}) | "
            f"{entry['train_seconds']:.0f} |"
        )
    return "\n".join(
        [
            "| model | val AUC | test AUC | test sens / spec at 0.5 | threshold (val) | "
            "test sensitivity (95% CI) | test specificity (95% CI) | train s |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )


def verdict(metrics):
    """One sentence: does the best model meet the bar on test at its validation-chosen threshold?"""
    name = metrics["best_model"]
    chosen, validation = metrics["models"][name]["test"], metrics["models"][name]["val"]
    met = chosen["sensitivity"] >= 0.90 and chosen["specificity"] >= 0.90
    passing = [
        model
        for model, entry in metrics["models"].items()
        if entry["test"]["sensitivity"] >= 0.90 and entry["test"]["specificity"] >= 0.90
    ]
    return (
        f"The best model on validation data, {name}, {'meets' if met else 'does not meet'} "
        f"the bar of 0.90 sensitivity and specificity on the official test set at its "
        f"validation-chosen threshold: {chosen['sensitivity']:.3f} / {chosen['specificity']:.3f} "
        f"(on validation {validation['sensitivity']:.3f} / {validation['specificity']:.3f}). "
        f"Candidates that meet it on test: {', '.join(passing) if passing else 'none'}."
    )


def label_free_table(metrics):
    """The separate label-free analysis (never the headline): EM class share and AdaBN."""
    analysis = metrics.get("label_free_analysis")
    if not analysis:
        return ""
    rows = [
        f"| {name} | {shares['val estimate']:.3f} ({shares['val true']:.3f}) | "
        f"{shares['test estimate']:.3f} ({shares['test true']:.3f}) |"
        for name, shares in analysis["prevalence"].items()
    ]
    lines = [
        "| model | EM share of pneumonia, val (true) | EM share of pneumonia, test (true) |",
        "|---|---|---|",
        *rows,
        "",
    ]
    lines += [
        "| model | AdaBN threshold (val) | test sensitivity | test specificity | test AUC |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {result['threshold']:.3f} | {result['test']['sensitivity']:.3f} | "
        f"{result['test']['specificity']:.3f} | {result['test']['auc']:.4f} |"
        for name, result in analysis["adabn"].items()
    ]
    return "\n".join(lines)


def evidence_table(metrics, seeds):
    """Where the single models look (lung share of their Grad-CAM heat on random films), the
    shortcut probe, and the spread over seeds (rows of seeds.csv: mean and range per model)."""
    gradcam, probe = metrics["gradcam"], metrics["shortcut_probe"]
    lines = [
        "| model | lung share, validation (films) | lung share, test (films) |",
        "|---|---|---|",
    ]
    lines += [
        f"| {name} | {gradcam[name]['val']['lung_share']:.3f} ({gradcam[name]['val']['films']}) | "
        f"{gradcam[name]['test']['lung_share']:.3f} ({gradcam[name]['test']['films']}) |"
        for name in ("small_cnn", "deep_cnn", "vgg16")
    ]
    lines += [
        "",
        f"The lung masks cover {gradcam['mean_region_fraction']:.3f} of the model's input on "
        f"average. A logistic regression on {probe['thumbnail_px']}×{probe['thumbnail_px']} "
        f"thumbnails separates the classes with validation AUC {probe['val_auc']:.3f} and test AUC "
        f"{probe['test_auc']:.3f}.",
    ]
    if seeds:
        seed_list = ", ".join(map(str, sorted({int(row["seed"]) for row in seeds})))
        lines += [
            "",
            f"Over seeds {seed_list} (mean, and range in brackets; nothing selected among seeds):",
            "",
            "| model | val AUC | test sensitivity | test specificity | test AUC |",
            "|---|---|---|---|---|",
        ]
        for name in dict.fromkeys(row["model"] for row in seeds):
            cells = []
            for column in ("val_auc", "test_sensitivity", "test_specificity", "test_auc"):
                values = [float(row[column]) for row in seeds if row["model"] == name]
                cells.append(
                    f"{sum(values) / len(values):.3f} ({min(values):.3f}–{max(values):.3f})"
                )
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


HISTORY = REPO / "results" / "run_history.csv"
MODELS = ("small_cnn", "deep_cnn", "vgg16", "ensemble")


def head_commit():
    """The short hash of the checked-out commit."""
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()


def record_run(metrics, change, history=HISTORY):
    """Append one row for a full run on the real data (each one scores the test set) to the run
    history."""
    if metrics["mode"] != "full":
        sys.exit("Only full runs on the real data go into the run history.")
    with open(history, newline="") as handle:
        rows = list(csv.DictReader(handle))
    commit = head_commit()
    row = {
        "run": str(int(rows[-1]["run"]) + 1 if rows else 1),
        "date": time.strftime("%Y-%m-%d"),
        "code_commit": commit,
        "report_commit": "",
        "changed_before_run": change,
        "best_model": metrics["best_model"],
        "wall_minutes": f"{metrics['timings']['total'] / 60:.1f}",
    }
    for name in MODELS:
        for key in ("sensitivity", "specificity", "auc"):
            row[f"{name}_{key}"] = f"{metrics['models'][name]['test'][key]:.3f}"
    with open(history, "a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else list(row)).writerow(row)
    print(f"Recorded run {row['run']} in {history}")


def update_readme(path, metrics, seeds=None):
    """Replace each block between <!-- NAME:start --> and <!-- NAME:end --> in the README with the
    table of that name, so the README quotes computed numbers only."""
    blocks = {
        "results": results_table(metrics) + "\n\n" + verdict(metrics),
        "evidence": evidence_table(metrics, seeds),
        "label-free": label_free_table(metrics),
        "timings": timing_table(metrics),
    }
    text = Path(path).read_text()
    for name, table in blocks.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            sys.exit(
                f"{path} has no block <!-- {name}:start --> ... <!-- {name}:end -->; "
                "add the markers where the table belongs."
            )
        text = pattern.sub(
            lambda match, table=table: match.group(1) + table + "\n" + match.group(2), text
        )
    Path(path).write_text(text)
    print(f"Updated the results, label-free and timings blocks of {path}")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--smoke", action="store_true", help="smoke mode on a generated data set")
    mode.add_argument("--data-dir", help="full run on this data folder")
    mode.add_argument("--table", help="print the tables of an existing metrics.json")
    parser.add_argument(
        "--readme", help="with --table: write the tables into this README's marked blocks"
    )
    parser.add_argument(
        "--record",
        metavar="CHANGE",
        help="with --table: add this full run to results/run_history.csv, "
        "with what changed before it",
    )
    parser.add_argument(
        "--weights",
        default=os.environ.get("PNEUMONIA_VGG16_WEIGHTS", ""),
        help="VGG16 notop weights file for offline machines",
    )
    args = parser.parse_args()
    if (args.readme or args.record) and not args.table:
        parser.error("--readme and --record need --table METRICS_JSON")
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
                overrides = {
                    "PNEUMONIA_SMOKE": "0",
                    "PNEUMONIA_DATA_DIR": args.data_dir,
                    "PNEUMONIA_VGG16_WEIGHTS": args.weights,
                }
            metrics = run_notebook(overrides, workdir)
    print(f"Hardware: {metrics['hardware']}; mode: {metrics['mode']}")
    print()
    print(timing_table(metrics))
    print()
    print(results_table(metrics))
    print()
    print(verdict(metrics))
    if metrics.get("label_free_analysis"):
        print()
        print("Separate label-free analysis (not the headline):")
        print()
        print(label_free_table(metrics))
    if args.record:
        record_run(metrics, args.record)
    if args.readme:
        seed_file = Path(args.table).parent / "seeds.csv"
        update_readme(
            args.readme,
            metrics,
            list(csv.DictReader(seed_file.open())) if seed_file.exists() else None,
        )


if __name__ == "__main__":
    main()
