"""Notebooks for real: a notebook run in JupyterLab (in Chromium) shows every figure once and every
attention view interactive, prints no widget warning and asks nothing of the network; the same
notebook saved and opened untrusted shows each view's static picture and the hint; and the
experiment scripts, made notebooks with jupytext, run headless with nbclient (one after another in
one kernel, each in a fresh namespace)."""

from pathlib import Path

import jupytext
import nbformat
import pytest
from jupyterlab import jupyterlab, open_notebook
from nbclient import NotebookClient

from mechlab.present.page import FALLBACK_HINT

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.notebook, pytest.mark.slow]

ATTENTION_CELL, FIGURE_CELLS = 1, [2, 3, 4]
CELLS = [
    "import mechlab\nfrom mechlab.present.lens import plot_lens_top1\n"
    "model = mechlab.load_model('smollm2-135m')",
    # an attention view: interactive when scripts run, a static picture when they do not
    "mechlab.attention_view(model, 'When Mary and John went to the store, John gave a drink to', "
    "layer=17, heads=[3, 4, 6])",
    # mechlab's figures, returned as a cell's value: shown once each
    "lens = mechlab.logit_lens(model, 'The capital of France is', target=' Paris')\n"
    "plot_lens_top1(lens)",
    "mechlab.plot_attention(model, 'The cat sat on the mat', layer=17, heads=[3, 4])",
    # the user's own pyplot figure still shows once mechlab is imported
    "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.title('my own plot');",
    # result objects as compact tables
    "lens",
    "mechlab.scan_heads(model, seq_len=20, batch=2)",
    # a second view: the bundle is already on the page and is not run again
    "mechlab.attention_view(model, 'The cat sat on the mat', layer=18, heads=[6])",
]
SECOND_VIEW = 7
# The old mechlab forced the Agg backend at import and returned pyplot figures: no image at all.
AGG_CELLS = [
    "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt",
    "figure, ax = plt.subplots()\nax.plot([1, 2])\nfigure",
]


def write_notebook(path: Path, cells: list[str]) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(notebook, path)
    return path


def figure_cells_show_one_image(view, indices) -> bool:
    return all(view.cells[i].images == 1 for i in indices)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root, home = tmp_path_factory.mktemp("notebooks"), tmp_path_factory.mktemp("jupyter-home")
    with jupyterlab(root, home) as lab:
        yield lab


def test_a_notebook_run_in_jupyterlab_shows_everything_once_offline(lab, smollm2):
    write_notebook(lab.root / "run.ipynb", CELLS)
    view = open_notebook(lab, "run.ipynb", run=True, screenshot=lab.root / "run.png")
    assert len(view.cells) == len(CELLS)
    attention = view.cells[ATTENTION_CELL]
    assert attention.canvases > 0, attention.text[:500]
    assert all(f"L17H{head}" in attention.text for head in (3, 4, 6))
    assert FALLBACK_HINT not in attention.text  # the script ran and removed the static picture
    assert figure_cells_show_one_image(view, FIGURE_CELLS), [c.images for c in view.cells]
    assert (
        "LensResult(smollm2-135m" in view.cells[5].text
        and "after L29 (output)" in view.cells[5].text
    )
    assert "Induction scores" in view.cells[6].text
    assert not [
        cell.text for cell in view.cells if "IProgress" in cell.text or "Traceback" in cell.text
    ]
    assert view.outside_requests(lab.base) == []


def test_a_saved_untrusted_notebook_shows_the_static_views_and_the_hint(lab, smollm2, tmp_path):
    """Executed elsewhere (nbclient), saved and opened: JupyterLab runs none of its scripts."""
    notebook = nbformat.read(write_notebook(tmp_path / "executed.ipynb", CELLS), as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    nbformat.write(notebook, lab.root / "saved.ipynb")
    view = open_notebook(lab, "saved.ipynb", run=False, screenshot=lab.root / "saved.png")
    attention = view.cells[ATTENTION_CELL]
    assert FALLBACK_HINT in attention.visible_text  # shown to the reader, not hidden
    assert attention.images == 1 and attention.canvases == 0  # the picture, no script ran
    assert "Heads, left to right: L17H3, L17H4, L17H6" in attention.visible_text
    assert figure_cells_show_one_image(view, FIGURE_CELLS)
    assert view.outside_requests(lab.base) == []


def test_the_figure_check_fails_on_a_notebook_that_forces_agg(lab):
    write_notebook(lab.root / "agg.ipynb", AGG_CELLS)
    view = open_notebook(lab, "agg.ipynb", run=True)
    assert "Figure size" in view.cells[1].text  # the figure's text repr instead of a picture
    assert not figure_cells_show_one_image(view, [1])


EXPERIMENTS = ROOT / "experiments"
SCRIPTS = sorted(EXPERIMENTS.glob("[0-9]*.py"))


@pytest.fixture(scope="module")
def experiment_kernel():
    """One kernel for every experiment notebook, started in experiments/ (so `_common` imports):
    each notebook still runs every cell in order, in a namespace reset before it, but Python,
    torch and TransformerLens start once instead of twelve times (about 8 s each)."""
    starter = NotebookClient(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import mechlab")]),
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(EXPERIMENTS)}},
    )
    starter.execute(cleanup_kc=False)  # the kernel stays up for the notebooks below
    yield starter.km
    starter._cleanup_kernel()  # shuts the kernel down: the starter owns it


def prelude(out: Path) -> str:
    """Run before each notebook: a clean namespace (%reset -f, so a name a notebook forgot to define
    is a NameError, as in a fresh kernel), no figures left open, the quick budgets, and where to
    write. It defines nothing the notebook could lean on."""
    return (
        "%reset -f\n"
        "import os, matplotlib.pyplot\n"
        "matplotlib.pyplot.close('all')\n"
        "os.environ['MECHLAB_EXPERIMENTS_QUICK'] = '1'  # training budgets shrink\n"
        f"os.environ['MECHLAB_EXPERIMENTS_OUT'] = {str(out)!r}\n"
        "del os, matplotlib"
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.name for script in SCRIPTS])
def test_experiment_scripts_run_as_notebooks(tmp_path, smollm2, script, experiment_kernel):
    """`make notebooks` turns the # %% scripts into notebooks with jupytext; each runs end to end
    with nbclient on the offline default model."""
    notebook = jupytext.read(script)
    assert notebook.cells and any(cell.cell_type == "markdown" for cell in notebook.cells)
    out = tmp_path / script.stem
    notebook.cells.insert(0, nbformat.v4.new_code_cell(prelude(out)))
    client = NotebookClient(
        notebook,
        km=experiment_kernel,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(EXPERIMENTS)}},
    )
    try:
        client.execute()
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
    assert any(out.iterdir()), script.name
