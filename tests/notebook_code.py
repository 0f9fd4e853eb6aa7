"""Run the notebook's helper cells (tagged "helpers") in this process, so tests call the very
functions the report uses."""
from pathlib import Path

import nbformat

NOTEBOOK = Path(__file__).resolve().parent.parent / "pneumonia_cnn.ipynb"


def load_helpers():
    namespace = {}
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        if cell.cell_type == "code" and "helpers" in cell.metadata.get("tags", []):
            exec(compile(cell.source, f"{NOTEBOOK.name} cell", "exec"), namespace)
    return namespace
