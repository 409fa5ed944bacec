"""Old import paths keep working, each with a DeprecationWarning that names the new home."""

import importlib
import subprocess
import sys

import pytest

from mechlab.moved import MOVED_MODULES


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_an_old_module_path_is_the_new_module_with_a_warning(old):
    new = MOVED_MODULES[old]
    # a fresh interpreter: the old path must not be imported yet, and the warning is seen once
    code = (
        "import warnings, importlib\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "import mechlab\n"
        f"try:\n    importlib.import_module({old!r})\n"
        "except DeprecationWarning as w:\n    print(w)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"{old} moved to {new}: import it from there"


def test_names_of_an_old_module_path_are_the_new_modules_own():
    with pytest.warns(DeprecationWarning, match="mechlab.model moved to mechlab.scratch.model"):
        old = importlib.import_module("mechlab.model")
    from mechlab.scratch.model import Transformer

    assert old.Transformer is Transformer


def test_a_moved_name_answers_from_its_new_home_with_a_warning():
    import mechlab.cli
    import mechlab.scratch.model
    from mechlab.io import read_prompts
    from mechlab.scratch.convert import to_hooked

    with pytest.warns(DeprecationWarning, match=r"mechlab.cli.read_prompts moved to mechlab.io"):
        assert mechlab.cli.read_prompts is read_prompts
    with pytest.warns(DeprecationWarning, match=r"to_hooked moved to mechlab.scratch.convert"):
        assert mechlab.scratch.model.to_hooked is to_hooked


def test_a_name_that_never_existed_is_still_an_attribute_error():
    import mechlab.cli

    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        mechlab.cli.nothing_here  # noqa: B018


@pytest.mark.parametrize("old", ["plots", "views", "text", "artifacts"])
def test_presentation_names_answer_from_their_capabilitys_module(old):
    """The presentation moved from one module per medium (plots, views, text, artifacts) to one
    module per capability: every old name still answers, with the new home in the warning."""
    module = importlib.import_module(f"mechlab.present.{old}")
    table = module.__getattr__.moved  # {name: its new module}
    assert len(table) > 3
    for name, new in table.items():
        with pytest.warns(DeprecationWarning, match=f"mechlab.present.{old}.{name} moved to {new}"):
            assert getattr(module, name) is getattr(importlib.import_module(new), name)
