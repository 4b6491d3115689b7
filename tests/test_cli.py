"""`python -m spacy_vanilla_ner`: the umbrella command line, `init-config`, and a user's
path from a CoNLL file to a trained pipeline. Commands run in a fresh process, as a user
runs them."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy import util
from spacy.tokens import DocBin
from thinc.api import Config

from spacy_vanilla_ner import cli
from spacy_vanilla_ner.convert import convert
from tests.helpers import FIXTURE, REPO, run_script

PROJECT_CONFIG = REPO / "configs" / "transformer_vner.cfg"
SUBCOMMANDS = ("init-config", "convert", "debug-data", "annotate")
FIXTURE_WORDS = 2583  # tokens of the 100-sentence fixture (tests/test_convert.py)


def run(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """Run `python -m ARGS...` (a module and its arguments) in a fresh process."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        cwd=str(cwd or REPO),
        env=env,
        timeout=timeout,
    )


def output(proc: subprocess.CompletedProcess) -> str:
    """stdout and stderr, whitespace collapsed (wasabi wraps messages at 80 columns)."""
    return " ".join((proc.stdout + "\n" + proc.stderr).split())


def expected_steps(words: int, batch_words: int = 1000) -> int:
    """The formula of the task, written out independently of `cli.scale_training`."""
    return max(1500, math.ceil(30 * words / batch_words / 100) * 100)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The fixture converted as a user would: train.spacy (all 100 sentences) and the
    80/20 split t.spacy / d.spacy."""
    path = tmp_path_factory.mktemp("corpus")
    convert(FIXTURE, path / "train.spacy")
    docs = list(DocBin().from_disk(path / "train.spacy").get_docs(spacy.blank("en").vocab))
    DocBin(docs=docs[:80]).to_disk(path / "t.spacy")
    DocBin(docs=docs[80:]).to_disk(path / "d.spacy")
    return path


def test_no_arguments_lists_the_subcommands():
    for args in ([], ["--help"]):
        proc = run("spacy_vanilla_ner", *args)
        assert proc.returncode == 0, proc.stderr
        for name in SUBCOMMANDS:
            assert name in proc.stdout, (args, proc.stdout)
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "name,module,option",
    [
        ("convert", "spacy_vanilla_ner.convert", "--n-sents"),
        ("debug-data", "spacy_vanilla_ner.debug_data", "--verbose"),
        ("annotate", "spacy_vanilla_ner.annotate", "--engine"),
    ],
)
def test_subcommand_help_and_the_old_form(name, module, option):
    """`python -m spacy_vanilla_ner NAME --help` shows the command of the module, and
    `python -m MODULE` still works."""
    umbrella = run("spacy_vanilla_ner", name, "--help")
    old = run(module, "--help")
    assert umbrella.returncode == 0 and old.returncode == 0, umbrella.stderr + old.stderr
    assert option in umbrella.stdout and option in old.stdout


def test_init_config_help():
    proc = run("spacy_vanilla_ner", "init-config", "--help")
    assert proc.returncode == 0, proc.stderr
    text = output(proc)
    assert "--gpu" in text and "--train" in text and "pytorch" in text


def test_importing_the_cli_imports_no_optional_dependency():
    result = run_script(
        """
        import json, sys
        import spacy_vanilla_ner.cli
        optional = {"ray", "pyarrow", "matplotlib", "spacy_transformers", "transformers"}
        print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & optional)))
        """
    )
    assert result == []


def test_init_config_is_the_project_config(tmp_path):
    """configs/transformer_vner.cfg is exactly the output of `init-config`, so that
    the project's config and the packaged recipe cannot drift apart."""
    out = tmp_path / "sub" / "config.cfg"
    proc = run("spacy_vanilla_ner", "init-config", out)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == PROJECT_CONFIG.read_bytes()
    text = output(proc)
    assert "50,000 training words" in text and "--train" in text  # the guidance
    assert f"python -m spacy_vanilla_ner debug-data {out} --paths.train" in text
    assert f"python -m spacy train {out} --output training --paths.train" in text
    # `-`: the config alone on stdout, the messages on stderr
    proc = run("spacy_vanilla_ner", "init-config", "-")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == PROJECT_CONFIG.read_text(encoding="utf8")
    assert "50,000" in proc.stderr


def test_recipe_is_the_project_config_with_comments():
    recipe = cli.RECIPE_PATH.read_text(encoding="utf8")
    assert Config().from_str(recipe, interpolate=False) == util.load_config(
        PROJECT_CONFIG, interpolate=False
    )
    assert "#" in recipe and "#" not in PROJECT_CONFIG.read_text(encoding="utf8")
    config = cli.load_recipe()
    training = config["training"]
    # The constants of cli.py state the recipe's own values.
    assert training["max_steps"] == cli.MIN_STEPS
    assert cli.batch_words(config) == cli.RECIPE_BATCH_WORDS
    assert training["optimizer"]["learn_rate"]["warmup_steps"] == cli.MIN_STEPS // 10
    assert training["optimizer"]["learn_rate"]["total_steps"] == "${training.max_steps}"


@pytest.mark.parametrize(
    "words,max_steps,warmup,eval_frequency",
    [
        (0, 1500, 150, 100),
        (30_296, 1500, 150, 100),  # WikiGold train
        (50_000, 1500, 150, 100),
        (50_001, 1600, 160, 100),
        (203_621, 6200, 620, 400),  # CoNLL-2003 train
        (1_000_000, 30000, 3000, 2000),
    ],
)
def test_scale_training(words, max_steps, warmup, eval_frequency):
    config = cli.load_recipe()
    values = cli.scale_training(config, words)
    assert values == {
        "max_steps": max_steps,
        "warmup_steps": warmup,
        "eval_frequency": eval_frequency,
    }
    assert config["training"]["max_steps"] == max_steps
    assert config["training"]["eval_frequency"] == eval_frequency
    rate = config["training"]["optimizer"]["learn_rate"]
    assert rate["warmup_steps"] == warmup and rate["total_steps"] == "${training.max_steps}"
    assert isinstance(values["eval_frequency"], int)


def test_init_config_gpu_changes_only_the_allocator(tmp_path):
    proc = run("spacy_vanilla_ner", "init-config", tmp_path / "gpu.cfg", "--gpu")
    assert proc.returncode == 0, proc.stderr
    gpu_lines = (tmp_path / "gpu.cfg").read_text(encoding="utf8").splitlines()
    cpu_lines = PROJECT_CONFIG.read_text(encoding="utf8").splitlines()
    changed = [(a, b) for a, b in zip(cpu_lines, gpu_lines) if a != b]
    assert len(gpu_lines) == len(cpu_lines)
    assert changed == [("gpu_allocator = null", 'gpu_allocator = "pytorch"')]
    config = util.load_config(tmp_path / "gpu.cfg", interpolate=True)
    assert config["system"]["gpu_allocator"] == "pytorch"
    assert config["training"]["gpu_allocator"] == "pytorch"  # via ${system.gpu_allocator}
    assert "--gpu-id 0" in output(proc)


def test_init_config_train_small_corpus(corpus, tmp_path):
    out = tmp_path / "config.cfg"
    proc = run("spacy_vanilla_ner", "init-config", out, "--train", corpus / "train.spacy")
    assert proc.returncode == 0, proc.stderr
    text = output(proc)
    assert f"{FIXTURE_WORDS:,} words -> 1,500 steps" in text
    assert "recipe's minimum" in text
    assert f"--paths.train {corpus / 'train.spacy'}" in text
    # The recipe's training length, unchanged.
    assert out.read_bytes() == PROJECT_CONFIG.read_bytes()


def test_init_config_train_large_corpus(corpus, tmp_path):
    """A corpus of about 120k words, in a directory of two .spacy files."""
    docs = list(DocBin().from_disk(corpus / "train.spacy").get_docs(spacy.blank("en").vocab))
    copies = 47
    big = tmp_path / "big"
    big.mkdir()
    DocBin(docs=docs * 20).to_disk(big / "a.spacy")
    DocBin(docs=docs * (copies - 20)).to_disk(big / "b.spacy")
    words = FIXTURE_WORDS * copies
    steps = expected_steps(words)
    assert steps > 1500
    out = tmp_path / "config.cfg"
    proc = run("spacy_vanilla_ner", "init-config", out, "--train", big)
    assert proc.returncode == 0, proc.stderr
    assert f"{words:,} words -> {steps:,} steps" in output(proc)
    raw = util.load_config(out, interpolate=False)
    assert raw["training"]["max_steps"] == steps
    assert raw["training"]["optimizer"]["learn_rate"]["warmup_steps"] == steps // 10
    assert raw["training"]["eval_frequency"] == max(100, int(round(steps / 15, -2)))
    assert raw["training"]["optimizer"]["learn_rate"]["total_steps"] == "${training.max_steps}"
    resolved = util.load_config(out, interpolate=True)
    assert resolved["training"]["optimizer"]["learn_rate"]["total_steps"] == steps
    # Nothing else differs from the recipe.
    default = util.load_config(PROJECT_CONFIG, interpolate=False)
    raw["training"]["max_steps"] = default["training"]["max_steps"]
    raw["training"]["eval_frequency"] = default["training"]["eval_frequency"]
    raw["training"]["optimizer"]["learn_rate"]["warmup_steps"] = 150
    assert raw == default


def test_init_config_train_not_a_docbin(tmp_path):
    out = tmp_path / "config.cfg"
    proc = run("spacy_vanilla_ner", "init-config", out, "--train", FIXTURE)
    assert proc.returncode == 1
    text = output(proc)
    assert f"python -m spacy_vanilla_ner convert {FIXTURE} corpus/train.spacy" in text
    assert text.count("✘") == 1 and "Traceback" not in text
    assert not out.exists()
    (tmp_path / "conll").mkdir()
    (tmp_path / "conll" / "train.conll").write_bytes(FIXTURE.read_bytes())
    proc = run("spacy_vanilla_ner", "init-config", out, "--train", tmp_path / "conll")
    assert proc.returncode == 1
    assert "no .spacy files" in output(proc) and "spacy_vanilla_ner convert" in output(proc)
    assert not out.exists()


def test_wrong_files_name_the_fix(corpus, tmp_path):
    """convert on a DocBin, debug-data on a CoNLL file: exit code 1 and the command
    that fixes it, no checks."""
    proc = run("spacy_vanilla_ner", "convert", corpus / "train.spacy", tmp_path / "x.spacy")
    assert proc.returncode == 1
    text = output(proc)
    assert "already a spaCy DocBin" in text and "nothing to convert" in text
    assert f"python -m spacy_vanilla_ner debug-data {corpus / 'train.spacy'}" in text
    assert f"python -m spacy train config.cfg --output training --paths.train {corpus}" in text
    assert "Traceback" not in text and not (tmp_path / "x.spacy").exists()
    proc = run("spacy_vanilla_ner", "debug-data", FIXTURE)
    assert proc.returncode == 1
    text = output(proc)
    assert f"python -m spacy_vanilla_ner convert {FIXTURE} corpus/train.spacy" in text
    assert "checks passed" not in text and text.count("✘") == 1


def test_user_workflow_end_to_end(corpus, tmp_path):
    """init-config -> debug-data -> spacy debug config -> spacy train -> spacy.load, as
    the next steps that init-config prints (a short training run)."""
    config = tmp_path / "config.cfg"
    paths = ["--paths.train", corpus / "t.spacy", "--paths.dev", corpus / "d.spacy"]
    proc = run("spacy_vanilla_ner", "init-config", config)
    assert proc.returncode == 0, proc.stderr
    proc = run("spacy_vanilla_ner", "debug-data", config, *paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "train: 80 docs" in output(proc) and "dev: 20 docs" in output(proc)
    proc = run("spacy", "debug", "config", config, *paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    short = ["--training.max_steps", "4", "--training.eval_frequency", "2"]
    proc = run("spacy", "train", config, "--output", tmp_path / "training", *paths, *short)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    nlp = spacy.load(tmp_path / "training" / "model-last")
    assert nlp.pipe_names == ["tok2vec", "vanilla_ner"]
    doc = nlp("Barack Obama visited Paris with the United Nations.")
    assert all(ent.label_ in {"LOC", "MISC", "ORG", "PER"} for ent in doc.ents)
