"""Module paths from before the layout by stage keep working for one release, each import warning
with a ``DeprecationWarning`` that names the new module; the paths that are stages themselves
(``ehrprog.features``, ``ehrprog.metrics``, ``ehrprog.evaluation``, ...) keep their names without
a warning."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import warnings

import pytest

import ehrprog
from ehrprog._moved import MOVED


def _forget(name: str) -> None:
    """As if ``name`` (and what is under it) had never been imported in this process."""
    for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[loaded]
    parent, _, attribute = name.rpartition(".")
    if parent in sys.modules and attribute in vars(sys.modules[parent]):
        delattr(sys.modules[parent], attribute)


def _fresh_import(name: str):
    _forget(name)
    return importlib.import_module(name)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_warns_naming_the_new_one_and_gives_its_names(old):
    with pytest.warns(DeprecationWarning, match=re.escape(MOVED[old][0])):
        module = _fresh_import(old)
    for target in MOVED[old]:
        new = importlib.import_module(target)
        for name in getattr(new, "__all__", [n for n in vars(new) if not n.startswith("_")]):
            assert getattr(module, name) is getattr(new, name), f"{old}.{name}"


def test_the_old_paths_users_wrote_give_the_same_objects():
    """The issue's examples: ``ehrprog.features``, ``ehrprog.windowed_counts``, ``ehrprog.baselines``,
    ``ehrprog.metrics``, and what a plugin author imported from ``ehrprog.backbones``."""
    from ehrprog.features.windowed import WindowedCounts
    from ehrprog.models.baselines import KFREBaseline, WindowedCountsBoostedCox
    from ehrprog.models.pretrain import pretrain
    from ehrprog.networks.backbones.bert import BertEncoder

    with pytest.warns(DeprecationWarning, match=r"ehrprog\.windowed_counts moved to ehrprog\.features\.windowed"):
        old = _fresh_import("ehrprog.windowed_counts")
    assert old.WindowedCounts is WindowedCounts
    with pytest.warns(DeprecationWarning, match=r"ehrprog\.baselines moved to ehrprog\.models\.baselines"):
        old = _fresh_import("ehrprog.baselines")
    assert old.KFREBaseline is KFREBaseline and old.WindowedCountsBoostedCox is WindowedCountsBoostedCox
    _forget("ehrprog.backbones")
    with pytest.warns(DeprecationWarning) as caught:  # the old package, then its module
        from ehrprog.backbones.bert import BertEncoder as old_encoder
    assert [str(w.message).split(" (")[0] for w in caught] == [
        "ehrprog.backbones moved to ehrprog.networks.backbones and ehrprog.models.pretrain",
        "ehrprog.backbones.bert moved to ehrprog.networks.backbones.bert",
    ]
    assert old_encoder is BertEncoder
    _forget("ehrprog.backbones")
    with pytest.warns(DeprecationWarning):
        from ehrprog.backbones import pretrain as old_pretrain
    assert old_pretrain is pretrain
    with pytest.raises(AttributeError, match=r"moved to ehrprog\.models\.baselines"):
        _ = old.NoSuchBaseline


def test_stage_paths_keep_their_names_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from ehrprog.evaluation import evaluate_split, verdict  # noqa: F401
        from ehrprog.features import PointFeatures  # noqa: F401
        from ehrprog.metrics import harrell_c, paired_bootstrap_c  # noqa: F401
        from ehrprog.plugins import BackboneSpec, get_backbone, hookimpl  # noqa: F401
        from ehrprog.visits import Gap, VisitFrame, group_visits  # noqa: F401

        assert ehrprog.metrics.harrell_c is harrell_c
        assert ehrprog.VisitProgressionEstimator.__module__ == "ehrprog.models.estimator"


def test_an_old_attribute_of_the_package_warns():
    _forget("ehrprog.baselines")
    with pytest.warns(DeprecationWarning, match="ehrprog.models.baselines"):
        baselines = ehrprog.baselines
    assert baselines.KFREBaseline.__module__ == "ehrprog.models.baselines"


def test_the_warning_points_at_the_importing_line(tmp_path):
    """Python shows a DeprecationWarning by default only where ``__main__`` triggered it, so the
    warning must be attributed to the user's import, not to the import machinery."""
    script = tmp_path / "user.py"
    script.write_text("import ehrprog.baselines\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
    assert f"{script}:1: DeprecationWarning: ehrprog.baselines moved to ehrprog.models.baselines" in done.stderr
