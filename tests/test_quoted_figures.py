"""Figures quoted in the notebook's text come from the committed run.

The rule: every number written with exactly three decimals in a markdown cell (each end of a range
such as 0.667–0.744 counts on its own) is a figure of the committed run, and must equal, rounded to
three decimals, some numeric value in results/metrics.json (any numeric leaf, also inside lists) or
in a numeric cell of a CSV file in results/, except results/test_predictions.csv: its per-film
probabilities are so many that nearly every three-decimal number would count as known.
"""

import csv
import json
import math
import re
from pathlib import Path

import nbformat

from notebook_code import NOTEBOOK

RESULTS = NOTEBOOK.parent / "results"
FIGURE = re.compile(r"(?<![\d.])\d+\.\d{3}(?!\d)")
# Per-film probabilities: not figures of the run, and they would make almost any number "known".
NOT_FIGURES = ("test_predictions.csv",)


def quoted_figures(markdown_text):
    """Every number with exactly three decimals in the text, in order (both ends of a range)."""
    return FIGURE.findall(markdown_text)


def numeric_leaves(value):
    """Every number in a JSON value, recursively (booleans are not numbers here)."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [number for item in value for number in numeric_leaves(item)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    return []


def csv_numbers(path):
    """Every cell of a CSV file that reads as a finite number."""
    numbers = []
    with open(path, newline="") as handle:
        for row in csv.reader(handle):
            for cell in row:
                try:
                    numbers.append(float(cell))
                except ValueError:
                    continue
    return [number for number in numbers if math.isfinite(number)]


def known_values(results_dir):
    """The values of a run, each formatted with three decimals."""
    results_dir = Path(results_dir)
    values = numeric_leaves(json.loads((results_dir / "metrics.json").read_text()))
    for path in sorted(results_dir.glob("*.csv")):
        if path.name not in NOT_FIGURES:
            values += csv_numbers(path)
    return {f"{value:.3f}" for value in values}


def unknown_figures(cells, results_dir):
    """(cell index, figure) for each quoted figure of a markdown cell that is not a known value."""
    known = known_values(results_dir)
    return [
        (index, figure)
        for index, cell in enumerate(cells)
        if cell.cell_type == "markdown"
        for figure in quoted_figures(cell.source)
        if figure not in known
    ]


def test_the_check_finds_a_figure_that_the_run_did_not_produce(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"auc": 0.96081, "ci": [0.6674, 0.744]}))
    (tmp_path / "seeds.csv").write_text("seed,model,auc\n7,vgg16,0.9523\n")
    text = "AUC 0.961, specificity 0.667–0.744, seed 7 AUC 0.952; version 2.16.1, p 0.05; 0.123."
    assert quoted_figures(text) == ["0.961", "0.667", "0.744", "0.952", "0.123"]
    cells = [nbformat.v4.new_markdown_cell(text), nbformat.v4.new_code_cell("x = 0.999")]
    assert unknown_figures(cells, tmp_path) == [(0, "0.123")]


def test_per_film_probabilities_do_not_make_a_figure_known(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"auc": 0.96081}))
    (tmp_path / "test_predictions.csv").write_text("path,label,vgg16\ntest/a.jpeg,1,0.1234\n")
    (tmp_path / "seeds.csv").write_text("seed,model,test_auc\n7,vgg16,0.5678\n")
    cells = [nbformat.v4.new_markdown_cell("AUC 0.961; a film at 0.123; seed 7 AUC 0.568.")]
    assert unknown_figures(cells, tmp_path) == [(0, "0.123")]
    assert "0.123" not in known_values(tmp_path) and "0.568" in known_values(tmp_path)


def test_figures_quoted_in_the_notebook_come_from_the_committed_run():
    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    unknown = unknown_figures(cells, RESULTS)
    assert not unknown, "figures quoted in markdown cells but not in results/: " + ", ".join(
        f"cell {index}: {figure}" for index, figure in unknown
    )
