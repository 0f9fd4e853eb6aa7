"""Run the notebook's definitions in this process, so tests call the very functions the report
uses: every statement of the cells tagged "helpers" (setup, configuration and pure definitions), and
the imports, functions and classes of every other code cell (which may define a helper and use it
at once)."""

import ast
from pathlib import Path

import nbformat

NOTEBOOK = Path(__file__).resolve().parent.parent / "pneumonia_cnn.ipynb"
DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)


def load_helpers():
    namespace = {}
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        if "helpers" not in cell.metadata.get("tags", []):
            tree.body = [node for node in tree.body if isinstance(node, DEFINITIONS)]
        exec(compile(tree, f"{NOTEBOOK.name} cell", "exec"), namespace)
    return namespace
