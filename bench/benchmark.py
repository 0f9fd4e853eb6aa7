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
    return "\n".join(["| section | seconds |", "|---|---|", *rows])


# What the table writers read: a metrics.json written before these keys existed is from an older
# notebook, and its tables cannot be made.
REQUIRED_KEYS = (
    "best_model",
    "models",
    "model_choice",
    "interval_method",
    "stress_tests",
    "worst_case",
    "occlusion",
    "mcnemar",
    "gradcam",
    "shortcut_probe",
    "timings",
)


def check_layout(metrics):
    """Stop with a clear message when metrics.json lacks what the tables need."""
    missing = [key for key in REQUIRED_KEYS if key not in metrics]
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


def label(name):
    """The readable name of a model, as the notebook writes it."""
    return MODEL_NAMES.get(name, name)


def with_interval(value, interval, decimals=3):
    low, high = interval
    return f"{value:.{decimals}f} ({low:.{decimals}f}–{high:.{decimals}f})"


def results_table(metrics):
    """Validation and test figures of every candidate; the test intervals are 95 % percentile
    intervals of a bootstrap over patients (metrics["interval_method"])."""
    rows = []
    for name, entry in metrics["models"].items():
        half, chosen = entry["test_at_0.5"], entry["test"]
        best = " (best)" if name == metrics["best_model"] else ""
        rows.append(
            f"| {label(name)}{best} | {entry['val']['auc']:.3f} | "
            f"{with_interval(chosen['auc'], chosen['auc_ci'])} | "
            f"{half['sensitivity']:.3f} / {half['specificity']:.3f} | {entry['threshold']:.3f} | "
            f"{with_interval(chosen['sensitivity'], chosen['sensitivity_ci'])} | "
            f"{with_interval(chosen['specificity'], chosen['specificity_ci'])} | "
            f"{entry['train_seconds']:.0f} |"
        )
    return "\n".join(
        [
            "| model | val AUC | test AUC (95 % patient-bootstrap) | test sens / spec at 0.5 | "
            "threshold (val) | test sensitivity (95 % patient-bootstrap) | "
            "test specificity (95 % patient-bootstrap) | train s |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Numbers in brackets: {metrics['interval_method']}.",
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
        f"The best model under the protocol (chosen on validation data only), {label(name)}, "
        f"{'meets' if met else 'does not meet'} the bar of 0.90 sensitivity and specificity on "
        f"the official test set at its validation-chosen threshold: "
        f"{chosen['sensitivity']:.3f} / {chosen['specificity']:.3f} "
        f"(on validation {validation['sensitivity']:.3f} / {validation['specificity']:.3f}). "
        f"Candidates that meet it on test: {', '.join(map(label, passing)) if passing else 'none'}."
    )


def mcnemar_sentence(metrics):
    """McNemar's exact test of the two single models with the highest validation AUC on the test
    films, raw and Holm-adjusted over the three film groups."""
    mcnemar = metrics["mcnemar"]
    first, second = mcnemar["models"]
    groups = list(mcnemar["p"])
    raw = ", ".join(f"{mcnemar['p'][group]:.3f} ({group})" for group in groups)
    adjusted = ", ".join(f"{mcnemar['p_holm'][group]:.3f} ({group})" for group in groups)
    return (
        f"McNemar's exact test, {label(first)} against {label(second)} (the two single models "
        f"with the highest validation AUC) at their validation thresholds on the test films: "
        f"p = {raw}; Holm-adjusted over the {len(groups)} film groups: {adjusted}."
    )


def label_free_table(metrics):
    """The separate label-free analysis (never the headline): EM class share and AdaBN."""
    analysis = metrics.get("label_free_analysis")
    if not analysis:
        return ""
    rows = [
        f"| {label(name)} | {shares['val estimate']:.3f} ({shares['val true']:.3f}) | "
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
        f"| {label(name)} | {result['threshold']:.3f} | {result['test']['sensitivity']:.3f} | "
        f"{result['test']['specificity']:.3f} | {result['test']['auc']:.3f} |"
        for name, result in analysis["adabn"].items()
    ]
    return "\n".join(lines)


def tie_text(tied):
    """The candidates tied for the best worst-case specificity; the best alone is no tie."""
    if len(tied) < 2:
        return "no tie"
    return f"tied within the tolerance: {', '.join(map(label, tied))}"


def evidence_table(metrics, seeds):
    """Per candidate, the evidence the protocol chooses with: the worst case over the acquisition
    stresses (validation specificity at the candidate's own threshold, and AUC), the validation AUC
    with the lung region blanked and with only the lung region kept, and the lung share of the
    single models' Grad-CAM heat; then the choice, the shortcut probe, and the spread over seeds
    (rows of seeds.csv: mean and range per model, and each seed's best model)."""
    worst, occlusion, gradcam = metrics["worst_case"], metrics["occlusion"], metrics["gradcam"]
    choice, probe = metrics["model_choice"], metrics["shortcut_probe"]
    singles = [name for name in worst if name in gradcam]
    lines = [
        "| model | worst stressed val specificity | worst stressed val AUC | "
        "val AUC, lungs blanked | val AUC, lungs only | lung share, val / test |",
        "|---|---|---|---|---|---|",
    ]
    for name in worst:
        share = (
            f"{gradcam[name]['val']['lung_share']:.3f} / {gradcam[name]['test']['lung_share']:.3f}"
            if name in singles
            else "–"
        )
        best = " (best)" if name == metrics["best_model"] else ""
        lines.append(
            f"| {label(name)}{best} | {worst[name]['val_specificity']:.3f} | "
            f"{worst[name]['val_auc']:.3f} | "
            f"{occlusion[name]['val_auc_lungs_blanked']:.3f} | "
            f"{occlusion[name]['val_auc_lungs_only']:.3f} | {share} |"
        )
    # "none" is the clean films: a row of the stress table, but not a stress
    stresses = [key for key in next(iter(metrics["stress_tests"].values())) if key != "none"]
    occluded = occlusion[next(iter(occlusion))]["films"]
    region = metrics.get("occlusion_region_fraction", gradcam["mean_region_fraction"])
    lines += [
        "",
        f"Worst case over the clean films and {len(stresses)} acquisition stresses "
        f"({', '.join(map(readable_key, stresses))}) of "
        f"{metrics.get('stress_films', '?')} random validation films. Occlusion on {occluded} "
        f"random validation films whose lung fields were found: the generous lung region (it "
        f"covers {region:.3f} of the input on average) filled with the film's mean, or everything "
        f"else filled. Lung share: the share of each model's Grad-CAM heat (from the "
        f"{gradcam.get('target', 'probability')}) inside that region, on "
        f"{gradcam[singles[0]]['val']['films']} validation and "
        f"{gradcam[singles[0]]['test']['films']} test films. Eligible under the protocol: "
        f"{', '.join(map(label, choice['eligible']))}; {tie_text(choice['tied'])}; "
        f"chosen: {label(metrics['best_model'])}.",
        "",
        f"A logistic regression on {probe['thumbnail_px']}×{probe['thumbnail_px']} thumbnails "
        f"separates the classes with validation AUC {probe['val_auc']:.3f} and test AUC "
        f"{probe['test_auc']:.3f}.",
    ]
    seed_numbers = sorted({int(row["seed"]) for row in seeds or []})
    if len(seed_numbers) == 1:
        # one seed is the table above: say which runs are missing instead of a range of one value
        lines += [
            "",
            f"Seeds: only seed {seed_numbers[0]} has run so far; `python bench/seeds.py --data-dir "
            "DIR --seeds ...` adds others to `results/seeds.csv`.",
        ]
    elif seeds:
        seed_list = ", ".join(map(str, seed_numbers))
        lines += [
            "",
            f"Over seeds {seed_list} (mean, and range in brackets; nothing selected among seeds):",
            "",
            "| model | val AUC | test sensitivity | test specificity | test AUC |",
            "|---|---|---|---|---|",
        ]
        names = {row["model"] for row in seeds}
        # the candidates in the notebook's order; a name it no longer has goes last
        order = {name: index for index, name in enumerate(MODELS)}
        for name in sorted(names, key=lambda name: (order.get(name, len(order)), name)):
            cells = []
            for column in ("val_auc", "test_sensitivity", "test_specificity", "test_auc"):
                values = [float(row[column]) for row in seeds if row["model"] == name]
                cells.append(
                    f"{sum(values) / len(values):.3f} ({min(values):.3f}–{max(values):.3f})"
                )
            lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
        # rows of seeds.csv written before it had a best_model column have none
        chosen = {int(row["seed"]): row["best_model"] for row in seeds if row.get("best_model")}
        if chosen:
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
    for name in MODELS:
        for key in ("sensitivity", "specificity", "auc"):
            row[f"{name}_{key}"] = f"{metrics['models'][name]['test'][key]:.3f}"
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
        "results": "\n\n".join(
            [results_table(metrics), verdict(metrics), mcnemar_sentence(metrics)]
        ),
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
    print(f"Updated the results, evidence, label-free and timings blocks of {path}")


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
    print(mcnemar_sentence(metrics))
    print()
    print(evidence_table(metrics, None))
    if metrics.get("label_free_analysis"):
        print()
        print("Separate label-free analysis (not the headline):")
        print()
        print(label_free_table(metrics))
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
