"""The one-command report renders in headless Chromium with every section; the experiment scripts
run end to end; the README's two commands are the ones the Makefile and CI run."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from chromium import render

from mechlab.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert (
        main(
            [
                "report",
                "--model",
                "random:tiny",
                "--model",
                "random:llama-tiny",
                "--seq-len",
                "10",
                "--batch",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


@pytest.mark.browser
def test_report_renders_every_section_offline(tiny_report):
    page = render(tiny_report / "report.html")
    for spec in ["random:tiny", "random:llama-tiny"]:
        assert f"{spec}: the from-scratch Transformer" in page.text  # parity
        assert (
            f"{spec}: the four heads with the highest induction scores" in page.text
        )  # attention views
    for section in [
        "all components agree",
        "logit lens on 'The capital of France is'",
        "Induction scores of every head",
        "Previous-token scores",
        "Next-token loss along the repeated sequences",
        "Induction scores of all models side by side",
        "mean-ablated together",  # the causal section: ablation runs on every model
        "skipped patching and direct logit attribution: answer ' Mary' is 5 tokens",
        "skipped token attribution: baseline ' the' is 4 tokens",
        "composition scores read from the weights alone",  # circuits, on every model
        "the induction circuit from the weights",
    ]:
        assert section in page.text, section
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', page.dom)) >= 2 * 8 + 1
    assert "Head Selector" in page.text  # the circuitsvis component rendered
    assert page.page_requests == []


def test_report_writes_json_beside_the_page(tiny_report):
    summary = json.loads((tiny_report / "report.json").read_text())
    assert set(summary) == {"random:tiny", "random:llama-tiny"}
    assert summary["random:tiny"]["parity_passed"] is True
    assert (tiny_report / "random_tiny" / "heads.json").exists()
    assert (tiny_report / "induction_mosaic.png").exists()
    circuits = json.loads((tiny_report / "random_tiny" / "circuits.json").read_text())
    assert circuits["induction_circuit"]["heads"] and len(circuits["composition"]["k"]) == 2
    assert (tiny_report / "random_tiny" / "composition_k.png").exists()


SECTIONS = [
    "from-scratch-against-the-library", "logit-lens", "head-scores",
    "the-induction-circuit-s-attention", "circuits-from-the-weights", "causal-checks",
]  # fmt: skip


def test_report_opens_with_contents_linking_every_section(tiny_report):
    """A heading per model and per section, each with a unique anchor, and the contents at the top
    link to every one of them, in page order, sections nested under their model."""
    page = (tiny_report / "report.html").read_text()
    nav = re.search(r'<nav class="mechlab-contents">(.*?)</nav>', page, re.S)
    ids = re.findall(r'<h[23] id="([^"]+)"', page)
    assert nav and re.findall(r'href="#([^"]+)"', nav[1]) == ids
    assert len(set(ids)) == len(ids)
    assert page.index("mechlab-contents") < page.index('<h2 id="random-tiny"')
    assert ids == [
        *["random-tiny", *(f"random-tiny-{section}" for section in SECTIONS)],
        *["random-llama-tiny", *(f"random-llama-tiny-{section}" for section in SECTIONS)],
        "all-models-side-by-side",
    ]
    # nested: the model's entry holds its sections' list
    assert re.search(
        r'<li><a href="#random-tiny">random:tiny</a><ul><li><a href="#random-tiny-', nav[1]
    )


@pytest.mark.slow
def test_report_on_smollm2(tmp_path):
    assert main(["report", "--model", "smollm2-135m", "--batch", "4", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "report.json").read_text())["smollm2-135m"]
    assert summary["parity_passed"] and summary["induction_heads"]
    assert (
        summary["lens_targets"][0]["target"] == " Paris"
        and summary["lens_targets"][0]["first_top1_layer"]
    )
    # the causal section: induction heads are needed, and one head carries the indirect object
    joint, control = summary["ablation"][-2:]
    assert joint["kind"] == "joint" and joint["delta"] > 10 * max(control["delta"], 0.01)
    assert summary["patching_top"][0][:2] == ["L23", "H3"]
    assert summary["dla_top_heads"][0][:2] == [23, 3]
    # every causal check ran; the tuned lens is shown only when one is cached (none is, in CI)
    assert all(reason.startswith("the tuned lens: none is cached") for reason in summary["skipped"])
    for name in ["ablation.png", "patch_heads.png", "patch.json", "dla.json", "dla_layers.png"]:
        assert (tmp_path / name).exists(), name
    # token attribution: occlusion (the reference) puts ' France' first, and the randomization
    # check ran for its three methods; the page and its files carry them
    assert summary["attribution_top"]["occlusion"][1] == " France"
    assert set(summary["randomization_passes"]) == {
        "saliency", "integrated_gradients", "occlusion"
    }  # fmt: skip
    assert summary["randomization_passes"]["occlusion"] is True
    for name in ["attribution.json", "attribution.png", "randomization.png"]:
        assert (tmp_path / name).exists(), name
    assert "Token attribution" in (tmp_path / "report.html").read_text()
    # circuits from the weights: the induction heads' keys read a previous-token head
    first = summary["induction_circuit"]["heads"][0]
    assert first["head"] == [18, 6] and first["previous_token_rank"] <= 2
    assert "Circuits from the weights" in (tmp_path / "report.html").read_text()


def test_report_unknown_model_fails_cleanly(tmp_path, capsys):
    assert main(["report", "--model", "nonsense", "--out", str(tmp_path / "out")]) == 2
    assert "unknown model spec" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_every_experiment_is_in_cell_format():
    """Each experiment is a script of # %% cells, so that it runs as a notebook too: every one of
    them runs end to end, once, as a notebook (tests/test_notebooks.py)."""
    scripts = sorted(p.name for p in (ROOT / "experiments").glob("[0-9]*.py"))
    assert len(scripts) >= 12
    for name in scripts:
        assert (ROOT / "experiments" / name).read_text().startswith("# %%")


def make_dry_run(target: str) -> list[str]:
    """The commands `make TARGET` would run here (make -n resolves the prerequisites)."""
    # as a user would type it, not as a sub-make of `make test` (which adds its own flags)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return result.stdout.splitlines()


def test_readme_commands_are_what_ci_and_make_run():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
    demo = make_dry_run("demo")
    assert demo[-1].endswith("/mechlab report --model smollm2-135m --out out/demo")
    test = make_dry_run("test")
    pytest = "OMP_NUM_THREADS=1 .venv/bin/python -m pytest -n auto --dist loadfile"
    assert test[-2] == f'{pytest} -m "not seeds"'  # the whole suite, a worker per core
    # then the fast numerics tests once more under another kernel path
    assert test[-1].startswith(f'MKL_CBWR=COMPATIBLE {pytest} -m "numerics and not slow')
    for check in (".venv/bin/ruff check .", ".venv/bin/lint-imports --no-cache"):
        assert check in test[:-2]
    assert any("apt-get install -y -qq chromium" in line for line in test)  # the browser tests
    fast = make_dry_run("test-fast")
    assert fast[-1] == f'{pytest} -m "not slow and not browser and not notebook and not seeds"'
