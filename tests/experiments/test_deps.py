"""Optional dependencies are checked before any work starts, with the install line; and the
runtime package imports neither matplotlib nor the experiment code."""

import importlib.util
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.helpers import FIXTURE, REPO
from vanilla_ner_experiments import deps

INSTALL_PLOTS = "pip install 'spacy-vanilla-ner[plots]'"


def test_runtime_package_imports_no_experiment_code():
    code = (
        "import sys; import spacy_vanilla_ner; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib'; "
        "bad = [m for m in sys.modules if m.startswith('vanilla_ner_experiments')]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_require_names_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert deps.missing("plots") == ["matplotlib"]
    with pytest.raises(deps.MissingDependency) as error:
        deps.require("plots", what="the plots")
    assert error.value.code == (
        f"the plots needs matplotlib, which cannot be imported. Install it with: {INSTALL_PLOTS}"
    )
    with pytest.raises(ValueError):
        deps.missing("nope")


def test_an_installed_module_that_fails_to_import_is_named_with_its_error(monkeypatch, tmp_path):
    (tmp_path / "broken_dep_for_test.py").write_text(
        "raise ImportError(\"cannot import name 'X' from 'hub.errors'\")\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(deps.EXTRAS, "plots", ("broken_dep_for_test", "no_such_module_for_test"))
    assert deps.missing("plots") == [
        "broken_dep_for_test (installed, but importing it fails: cannot import name 'X' from "
        "'hub.errors')",
        "no_such_module_for_test",
    ]
    with pytest.raises(deps.MissingDependency, match="which cannot be imported"):
        deps.require("plots")


def test_compare_and_benchmark_check_plots_first(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("compare_script", REPO / "scripts" / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(deps.MissingDependency, match=r"spacy-vanilla-ner\[plots\]"):
        compare.main(["--train", str(FIXTURE), "--dev", str(FIXTURE), "--output", str(tmp_path)])
    benchmark = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['matplotlib'] = None; "
            "sys.argv[0] = 'conll2003.py'; import runpy; "
            f"runpy.run_path({str(REPO / 'benchmarks' / 'conll2003.py')!r}, run_name='__main__')",
            "--train",
            str(FIXTURE),
            "--dev",
            str(FIXTURE),
            "--work-dir",
            str(tmp_path / "w"),
            "--output",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert benchmark.returncode == 1 and INSTALL_PLOTS in benchmark.stderr
    assert not (tmp_path / "w").exists()  # nothing converted


def test_project_diagnose_without_matplotlib_fails_at_once(tmp_path):
    """`spacy project run diagnose` where matplotlib is missing (a module that fails to
    import stands in for it) stops before any training, with the install line."""
    shim = tmp_path / "shim" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('simulated: no matplotlib')\n")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "project.yml", project / "project.yml")
    shutil.copytree(REPO / "scripts", project / "scripts")
    shutil.copytree(REPO / "vanilla_ner_experiments", project / "vanilla_ner_experiments")
    (project / "assets" / "wikigold").mkdir(parents=True)
    shutil.copy(REPO / "assets" / "wikigold" / "train.conll", project / "assets" / "wikigold")
    path = os.pathsep.join(p for p in (str(shim.parent), os.environ.get("PYTHONPATH")) if p)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "spacy", "project", "run", "diagnose", str(project)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=path),
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert INSTALL_PLOTS in output
    assert "== first" not in output  # no variant was trained
    assert not (project / "metrics" / "diagnose.json").exists()
    assert time.perf_counter() - started < 120
