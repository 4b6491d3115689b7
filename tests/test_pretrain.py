"""Self-supervised pretraining: scripts/make_pretrain_text.py, the [pretraining] block of
configs/transformer_vner.cfg, and the `spacy pretrain` -> `init_tok2vec` -> `spacy train`
round trip on the 100-sentence fixture (the project commands in a fresh process: slow)."""

import importlib.util
import io
import subprocess
import sys

import numpy
import pytest
import srsly
from spacy.tokens import DocBin
from spacy.training.initialize import init_nlp
from spacy.training.loop import train
from spacy.training.pretrain import pretrain
from spacy.util import load_config

from spacy_vanilla_ner.convert import convert
from tests.helpers import FIXTURE, REPO, copy_project, edit_config

CONFIG = REPO / "configs" / "transformer_vner.cfg"


def load_make_pretrain_text():
    path = REPO / "scripts" / "make_pretrain_text.py"
    spec = importlib.util.spec_from_file_location("make_pretrain_text", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tok2vec_weights(nlp):
    """Every parameter of the tok2vec component, thinc and torch, by a stable name."""
    weights = {}
    for i, node in enumerate(nlp.get_pipe("tok2vec").model.walk()):
        for name in node.param_names:
            if node.has_param(name):
                weights[f"{i}:{node.name}:{name}"] = numpy.array(node.get_param(name))
        for j, shim in enumerate(node.shims):
            for key, value in shim._model.state_dict().items():
                weights[f"{i}:{j}:{key}"] = value.detach().cpu().numpy().copy()
    return weights


def n_different(a, b):
    assert a.keys() == b.keys()
    return sum(not numpy.array_equal(a[key], b[key]) for key in a)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The fixture as train/dev .spacy files and as pretraining JSONL."""
    path = tmp_path_factory.mktemp("pretrain")
    convert(FIXTURE, path / "train.spacy")
    module = load_make_pretrain_text()
    n = module.make_pretrain_text(FIXTURE, path / "text.jsonl")
    assert n == 100
    return path


@pytest.fixture(scope="module")
def pretrained(data):
    """Two epochs of `spacy pretrain` with the shipped config."""
    overrides = {"paths.raw_text": str(data / "text.jsonl"), "pretraining.max_epochs": 2}
    # As `spacy pretrain` does: the interpolated config.
    config = load_config(CONFIG, overrides=overrides, interpolate=False).interpolate()
    (data / "pretrain").mkdir()
    pretrain(config, data / "pretrain", use_gpu=-1, silent=True)
    return data / "pretrain"


def train_config(data, **overrides):
    overrides = {
        "paths.train": str(data / "train.spacy"),
        "paths.dev": str(data / "train.spacy"),
        "corpora.dev.limit": 20,
        "training.max_steps": 4,
        "training.eval_frequency": 4,
        **overrides,
    }
    return load_config(CONFIG, overrides=overrides, interpolate=False)


def test_make_pretrain_text_conll_and_spacy_agree(data, tmp_path):
    module = load_make_pretrain_text()
    records = list(srsly.read_jsonl(data / "text.jsonl"))
    assert records[0] == {
        "text": "010 is the tenth album from Japanese Punk Techno band The Mad Capsule Markets ."
    }
    assert all(set(r) == {"text"} and r["text"].strip() for r in records)
    assert module.make_pretrain_text(data / "train.spacy", tmp_path / "a.jsonl") == 100
    assert list(srsly.read_jsonl(tmp_path / "a.jsonl")) == records
    # --n-sents 0: one line per article.
    n_articles = module.make_pretrain_text(FIXTURE, tmp_path / "b.jsonl", n_sents=0)
    assert 1 <= n_articles < 100
    joined = " ".join(r["text"] for r in srsly.read_jsonl(tmp_path / "b.jsonl"))
    assert joined == " ".join(r["text"] for r in records)


def test_make_pretrain_text_refuses_empty_input(tmp_path):
    module = load_make_pretrain_text()
    empty = tmp_path / "empty.spacy"
    DocBin().to_disk(empty)
    with pytest.raises(ValueError, match="no text"):
        module.make_pretrain_text(empty, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_config_pretraining_block():
    """Without a [pretraining] block spaCy ignores [initialize] init_tok2vec."""
    config = load_config(CONFIG, interpolate=False)
    pretraining = config["pretraining"]
    assert pretraining["component"] == "tok2vec" and pretraining["layer"] == ""
    assert pretraining["objective"]["@architectures"] == "spacy.PretrainCharacters.v1"
    assert pretraining["corpus"] == "corpora.pretrain"
    assert config["corpora"]["pretrain"]["@readers"] == "spacy.JsonlCorpus.v1"
    assert config["corpora"]["pretrain"]["path"] == "${paths.raw_text}"
    assert config["initialize"]["init_tok2vec"] == "${paths.init_tok2vec}"


def test_pretrain_writes_weights(pretrained):
    names = {p.name for p in pretrained.glob("*.bin")}
    assert names == {"model0.bin", "model1.bin", "model-last.bin"}
    log = list(srsly.read_jsonl(pretrained / "log.jsonl"))
    assert [row["epoch"] for row in log] == [0, 1, 2]
    assert log[0]["nr_word"] > 1000 and numpy.isfinite(log[-1]["loss"])


def test_init_tok2vec_loads_pretrained_weights_and_trains(data, pretrained):
    weights_path = pretrained / "model-last.bin"
    plain_nlp = init_nlp(train_config(data))
    plain = tok2vec_weights(plain_nlp)
    # Without init_tok2vec the [pretraining] block changes nothing.
    no_block = train_config(data)
    no_block["pretraining"] = {}
    assert n_different(tok2vec_weights(init_nlp(no_block)), plain) == 0
    nlp = init_nlp(train_config(data, **{"paths.init_tok2vec": str(weights_path)}))
    loaded = tok2vec_weights(nlp)
    # The same seed: without the pretrained weights both inits would be identical.
    assert n_different(plain, loaded) >= len(plain) // 2
    # Exactly the pretrained weights: load them by hand into the plain pipeline.
    plain_nlp.get_pipe("tok2vec").model.from_bytes(weights_path.read_bytes())
    assert n_different(tok2vec_weights(plain_nlp), loaded) == 0
    # And it trains from there (4 steps, the listener reaches the pretrained tok2vec).
    out = io.StringIO()
    train(nlp, None, use_gpu=-1, stdout=out, stderr=out)
    trained = tok2vec_weights(nlp)
    assert n_different(loaded, trained) > 0
    assert all(numpy.isfinite(w).all() for w in trained.values())
    assert nlp.get_pipe("vanilla_ner").labels == ("LOC", "MISC", "ORG", "PER")


def test_project_pretrain_commands():
    """The project commands exist, are wired to the vars and declare their outputs."""
    from weasel.util import load_project_config

    project = load_project_config(REPO, interpolate=True)
    commands = {c["name"]: c for c in project["commands"]}
    variables = project["vars"]
    assert variables["pretrain_text"] == "corpus/train_text.jsonl"
    assert variables["init_tok2vec"] == "training/pretrain/model-last.bin"
    assert commands["pretrain-text"]["outputs"] == ["corpus/train_text.jsonl"]
    pretrain_cmd = commands["pretrain"]["script"][-1]
    assert pretrain_cmd.startswith("python -m spacy pretrain configs/transformer_vner.cfg")
    assert "--paths.raw_text corpus/train_text.jsonl" in pretrain_cmd
    assert "training/pretrain/model-last.bin" in commands["pretrain"]["outputs"]
    train_cmd = commands["train-pretrained"]["script"][0]
    assert "--paths.init_tok2vec training/pretrain/model-last.bin" in train_cmd
    # The same training as `train`, plus the weights.
    plain_train = commands["train"]["script"][0]
    assert train_cmd.startswith(plain_train.split(" --paths.transformer_model")[0])
    assert project["workflows"]["all-pretrained"] == [
        "convert",
        "pretrain-text",
        "pretrain",
        "train-pretrained",
        "evaluate",
    ]


def run(args, cwd, timeout=600):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_project_pretrain_then_train(tmp_path):
    """`spacy project run` convert, pretrain-text, pretrain, train-pretrained in a copy of the
    project, on the fixture; then with a JSONL of the user's own."""
    copy_project(tmp_path)
    config = tmp_path / "configs" / "transformer_vner.cfg"
    # Short runs, set in the config as a user would (project.yml overrides nothing).
    edit_config(
        config,
        {"pretraining.max_epochs": 2, "training.max_steps": 4, "training.eval_frequency": 2},
    )
    project = [sys.executable, "-m", "spacy", "project", "run"]
    data = ["--vars.train", str(FIXTURE), "--vars.dev", str(FIXTURE)]
    run([*project, "convert", ".", *data], cwd=tmp_path)
    run([*project, "pretrain-text", ".", *data], cwd=tmp_path)
    run([*project, "pretrain", "."], cwd=tmp_path)
    out = tmp_path / "training" / "pretrain"
    assert {p.name for p in out.glob("*.bin")} == {"model0.bin", "model1.bin", "model-last.bin"}
    stdout = run([*project, "train-pretrained", "."], cwd=tmp_path)
    assert (tmp_path / "training" / "model-best" / "meta.json").exists(), stdout
    # Any JSONL: pretrain on a file of one's own, then train from epoch 0's weights.
    own = tmp_path / "own.jsonl"
    srsly.write_jsonl(own, [{"text": "Ada Lovelace was born in London in 1815 ."}] * 20)
    edit_config(config, {"pretraining.max_epochs": 1})
    run([*project, "pretrain", ".", "--vars.pretrain_text", str(own)], cwd=tmp_path)
    assert {p.name for p in out.glob("*.bin")} == {"model0.bin", "model-last.bin"}
    init = ["--vars.init_tok2vec", "training/pretrain/model0.bin"]
    run([*project, "train-pretrained", ".", *init], cwd=tmp_path)
