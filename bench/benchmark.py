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


def readable_key(key):
    """A model's readable name, or a key of metrics.json with spaces for its underscores."""
    return MODEL_NAMES.get(key, key.replace("_", " "))


def timing_table(metrics):
    timings = metrics["timings"].items()
    rows = [f"| {readable_key(section)} | {seconds:.1f} |" for section, seconds in timings]
    speed = metrics["reference_speed"]["ms_per_image"]
    return "\n".join(
        [
            "| section | seconds |",
            "|---|---|",
            *rows,
            "",
            f"Reference speed of the machine: {speed:.1f} ms per image of a VGG16 forward pass at "
            "64 px (lower is faster).",
        ]
    )


# What the table writers read: a metrics.json written before these keys existed is from an older
# notebook, and its tables cannot be made.
REQUIRED_KEYS = (
    "best_model",
    "models",
    "model_choice",
    "interval_method",
    "reference_speed",
    "timings",
)


def check_layout(metrics):
    """Stop with a clear message when metrics.json lacks what the tables need."""
    missing = [key for key in REQUIRED_KEYS if key not in metrics]
    first = next(iter(metrics.get("models", {}).values()), {})
    if "internal_test" not in first:
        missing.append("models' internal_test figures")
    if missing:
        sys.exit(
            f"This metrics.json has no {', '.join(missing)}: it was written by an older notebook. "
            "Run the current notebook to write one with the current layout."
        )


MODEL_NAMES = {
    "small_cnn": "small CNN",
    "deep_cnn": "deep CNN",
    "vgg16": "VGG16",
    "ensemble": "ensemble",
}
TARGET = 0.90  # the assignment's target: sensitivity and specificity both


def label(name):
    """The readable name of a model, as the notebook writes it."""
    return MODEL_NAMES.get(name, name)


def with_interval(figures, key, decimals=3):
    low, high = figures[f"{key}_ci"]
    return f"{figures[key]:.{decimals}f} [{low:.{decimals}f}, {high:.{decimals}f}]"


def meets_target(figures):
    return min(figures["sensitivity"], figures["specificity"]) >= TARGET


def results_table(metrics):
    """Every candidate's validation AUC and its internal and official test figures at its
    validation threshold; intervals are 95 % patient-bootstrap intervals."""
    rows = []
    for name, entry in metrics["models"].items():
        internal, official = entry["internal_test"], entry["test"]
        best = " (best)" if name == metrics["best_model"] else ""
        cells = [
            f"{entry['threshold']:.3f}",
            with_interval(entry["val"], "auc"),
            *(with_interval(internal, key) for key in ("sensitivity", "specificity")),
            *(with_interval(official, key) for key in ("sensitivity", "specificity", "auc")),
        ]
        rows.append(f"| {label(name)}{best} | " + " | ".join(cells) + " |")
    return "\n".join(
        [
            "| model | threshold (validation) | validation AUC | internal test sensitivity | "
            "internal test specificity | official test sensitivity | official test specificity | "
            "official test AUC |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Numbers in brackets: {metrics['interval_method']}.",
        ]
    )


def verdict(metrics):
    """Two sentences: how the best model was chosen, and whether it meets the target of 0.90 /
    0.90 on each test set at its validation-chosen threshold."""
    name, choice = metrics["best_model"], metrics["model_choice"]
    entry = metrics["models"][name]
    tied = [other for other in choice["tied"] if other != choice["leader"]]
    if tied:
        how = (
            f"{label(choice['leader'])} had the highest validation AUC, but validation could not "
            f"separate it from {', '.join(map(label, tied))}; the protocol takes {label(name)}"
        )
    else:
        how = (
            f"{label(name)} had the highest validation AUC, clearly ahead of every other candidate"
        )
    parts = []
    for split, title in (("internal_test", "internal test"), ("test", "official test")):
        figures = entry[split]
        met = (
            "meets the target in its point estimates"
            if meets_target(figures)
            else "misses the target"
        )
        parts.append(
            f"on the {title} it {met} ({figures['sensitivity']:.3f} / {figures['specificity']:.3f})"
        )
    return (
        f"{how} (best model under the protocol, chosen on validation data only). At its "
        f"validation threshold (sensitivity / specificity; target {TARGET:.2f} / {TARGET:.2f}): "
        f"{'; '.join(parts)}."
    )


def seed_table(seeds):
    """Mean and range over the seeds of each model's test figures, and each seed's best model;
    rows of seeds.csv written by an older notebook (no internal test columns) are left out."""
    seeds = [row for row in seeds or [] if row.get("internal_test_specificity") not in (None, "")]
    numbers = sorted({int(row["seed"]) for row in seeds})
    if len(numbers) < 2:
        listed = f"only seed {numbers[0]}" if numbers else "no seed"
        return (
            f"Seeds: {listed} of this configuration has run so far; `python bench/seeds.py "
            "--data-dir DIR --seeds ...` adds others to `results/seeds.csv`."
        )
    columns = (
        "internal_test_sensitivity",
        "internal_test_specificity",
        "test_sensitivity",
        "test_specificity",
        "test_auc",
    )
    lines = [
        f"Over seeds {', '.join(map(str, numbers))} (mean, and range in parentheses; "
        "nothing selected among seeds):",
        "",
        "| model | internal test sensitivity | internal test specificity | official test "
        "sensitivity | official test specificity | official test AUC |",
        "|---|---|---|---|---|---|",
    ]
    names = {row["model"] for row in seeds}
    # the candidates in the notebook's order; a name it no longer has goes last
    order = {name: index for index, name in enumerate(MODELS)}
    for name in sorted(names, key=lambda name: (order.get(name, len(order)), name)):
        cells = []
        for column in columns:
            values = [float(row[column]) for row in seeds if row["model"] == name]
            cells.append(f"{sum(values) / len(values):.3f} ({min(values):.3f}–{max(values):.3f})")
        lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
    chosen = {int(row["seed"]): row["best_model"] for row in seeds}
    lines += [
        "",
        "Best model under the protocol, per seed: "
        + "; ".join(f"seed {seed}: {label(name)}" for seed, name in sorted(chosen.items()))
        + ".",
    ]
    return "\n".join(lines)


HISTORY = REPO / "results" / "run_history.csv"
MODELS = ("small_cnn", "deep_cnn", "vgg16", "ensemble")


def head_commit():
    """The short hash of the checked-out commit."""
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()


def protocol_is_fixed(commit):
    """True when `commit` names a commit that is an ancestor of (or is) the checked-out one."""
    if not re.fullmatch(r"[0-9a-f]{7,40}", str(commit)):
        return False
    ancestry = ["git", "merge-base", "--is-ancestor", commit, "HEAD"]
    return subprocess.run(ancestry, cwd=REPO, capture_output=True).returncode == 0


def record_run(metrics, change, history=HISTORY, commit=None):
    """Add one row for a full run on the real data (each one scores the test set) to the run
    history, with the commit at which its protocol was fixed (an ancestor of the run's code).
    `commit` is the code the run ran (taken before it started); the checked-out one by default."""
    if metrics["mode"] != "full":
        sys.exit("Only full runs on the real data go into the run history.")
    protocol = metrics.get("protocol", {}).get("commit", "")
    if not protocol_is_fixed(protocol):
        sys.exit(
            f"The run's protocol commit '{protocol}' is not an ancestor of the checked-out commit: "
            "commit the protocol first and set PROTOCOL_COMMIT in the notebook to that commit."
        )
    with open(history, newline="") as handle:
        rows = list(csv.DictReader(handle))
    row = {
        "run": str(int(rows[-1]["run"]) + 1 if rows else 1),
        "date": time.strftime("%Y-%m-%d"),
        "code_commit": commit or head_commit(),
        "report_commit": "",
        "changed_before_run": change,
        "best_model": metrics["best_model"],
        "wall_minutes": f"{metrics['timings']['total'] / 60:.1f}",
        "protocol_commit": protocol,
    }
    row["reference_speed_ms"] = f"{metrics['reference_speed']['ms_per_image']:.1f}"
    for name in MODELS:
        for key in ("sensitivity", "specificity", "auc"):
            row[f"{name}_{key}"] = f"{metrics['models'][name]['test'][key]:.3f}"
            row[f"{name}_internal_{key}"] = f"{metrics['models'][name]['internal_test'][key]:.3f}"
    columns = list(dict.fromkeys([*(rows[0] if rows else {}), *row]))
    with open(history, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows([*rows, row])
    print(f"Recorded run {row['run']} in {history}")


def update_readme(path, metrics, seeds=None):
    """Replace each block between <!-- NAME:start --> and <!-- NAME:end --> in the README with the
    table of that name, so the README quotes computed numbers only."""
    check_layout(metrics)
    blocks = {
        "results": "\n\n".join([results_table(metrics), verdict(metrics)]),
        "seeds": seed_table(seeds),
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
    print(f"Updated the results, seeds and timings blocks of {path}")


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
        "--commit",
        default="",
        help="with --record: the commit whose code the run ran (default: the checked-out one)",
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
    check_layout(metrics)
    print(f"Hardware: {metrics['hardware']}; mode: {metrics['mode']}")
    print()
    print(timing_table(metrics))
    print()
    print(results_table(metrics))
    print()
    print(verdict(metrics))
    print()
    if args.record:
        record_run(metrics, args.record, commit=args.commit or None)
    if args.readme:
        seed_file = Path(args.table).parent / "seeds.csv"
        update_readme(
            args.readme,
            metrics,
            list(csv.DictReader(seed_file.open())) if seed_file.exists() else None,
        )


if __name__ == "__main__":
    main()
