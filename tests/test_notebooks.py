"""Every notebook in ``notebooks/`` is stored without outputs and executes at small sizes.

Executing them takes minutes, so those tests carry the ``notebooks`` marker: ``make test``
deselects them and ``make notebooks`` (a CI step of its own) runs exactly them, with
``CTXPPL_SMALL=1`` (the notebooks' small-size switch). Each notebook must finish within
``CTXPPL_NOTEBOOK_TIMEOUT`` seconds (180 by default).
"""

import json
import os
import pathlib
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT = float(os.environ.get("CTXPPL_NOTEBOOK_TIMEOUT", "180"))


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    for required in ("death_to_cluster_models.ipynb", "hierarchical_plates.ipynb",
                     "mixed_effects.ipynb", "online_game.ipynb", "bayesian_networks.ipynb"):
        assert required in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs", []) == [], f"{path.name}: cell {i} has outputs"
            assert cell.get("execution_count") is None, f"{path.name}: cell {i} was run"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    import nbclient  # `make notebooks` installs nbclient, nbformat and ipykernel
    import nbformat
    monkeypatch.setenv("CTXPPL_SMALL", os.environ.get("CTXPPL_SMALL", "1"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=int(TIMEOUT), kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    t = time.perf_counter()
    client.execute()  # raises CellExecutionError with the failing cell and its traceback
    seconds = time.perf_counter() - t
    assert seconds < TIMEOUT, f"{path.name} took {seconds:.0f}s (limit {TIMEOUT:.0f}s)"
