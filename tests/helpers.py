"""Helpers shared by the tests: small pipelines and their training, the
WikiGold fixture as examples, pathological inputs, checks on entities, and a
runner for scripts in a fresh process. Fixtures are in `conftest.py`."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy
import pytest
import spacy
import torch
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import fix_random_seed

from spacy_vanilla_ner.convert import conll_to_docs

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "wikigold-100.conll"
LABELS = ("LOC", "MISC", "ORG", "PER")


_NAUGHTY_SUBSET = [
    r",./;'[]\-=",
    r'<>?:"{}|_+',
    (
        "\u00ad\u0600\u0601\u0602\u0603\u0604\u0605\u061c\u06dd\u070f"
        "\u180e\u200b\u200c\u200d\u200e\u200f\u202a"
    ),
    "\ufffe",
    "Ω≈ç√∫˜µ≤≥÷",
    "ЁЂЃЄЅІЇЈЉЊЋЌЍЎЏАБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯабвгдежзийклмнопрстуфхцчшщъыьэюя",
    "٠١٢٣٤٥٦٧٨٩",
    "田中さんにあげて下さい",
    "和製漢語",
    "𜎀𜎁𜎂",
    "Ṱ̺̺̕o͞ ̷i̲̬͇̪͙n̝̗͕v̟̜̘̦͟o̶̙̰̠kè͚̮̺̪̹̱̤ ̖t̝͕̳̣̻̪͞h̼͓̲̦̳̘̲e͇̣̰̦̬͎ ̢̼̻̱̘h͚͎͙̜̣̲ͅi̦̲̣̰̤v̻͍e̺̭̳̪̰-m̢iͅn̖̺̞̲̯̰d̵̼̟͙̩̼̘̳ ̞̥̱̳̭r̛̗̘e͙p͠r̼̞̻̭̗e̺̠̣͟s̘͇̳͍̝͉e͉̥̯̞̲͚̬͜ǹ̬͎͎̟̖͇̤t͍̬̤͓̼̭͘ͅi̪̱n͠g̴͉ ͏͉ͅc̬̟h͡a̫̻̯͘o̫̟̖͍̙̝͉s̗̦̲.̨̹͈̣",
    (
        "˙ɐnbᴉlɐ ɐuƃɐɯ ǝɹolop ʇǝ ǝɹoqɐl ʇn ʇunpᴉpᴉɔuᴉ ɹodɯǝʇ poɯsnᴉǝ "
        "op pǝs 'ʇᴉlǝ ƃuᴉɔsᴉdᴉpɐ ɹnʇǝʇɔǝsuoɔ 'ʇǝɯɐ ʇᴉs ɹolop ɯnsdᴉ ɯǝɹo˥"
    ),
    "𝐓𝐡𝐞 𝐪𝐮𝐢𝐜𝐤 𝐛𝐫𝐨𝐰𝐧 𝐟𝐨𝐱 𝐣𝐮𝐦𝐩𝐬 𝐨𝐯𝐞𝐫 𝐭𝐡𝐞 𝐥𝐚𝐳𝐲 𝐝𝐨𝐠",
    "<script>alert(123)</script>",
    "' OR 1=1 -- 1",
    "1;DROP TABLE users",
    "%d %s %x %n",
    "\u202eRTL override text",
    "Ω  \t\n\r  \u00a0 \u2003 x",
]


def naughty_strings() -> List[str]:
    try:
        from spacy.tests.tokenizer.test_naughty_strings import NAUGHTY_STRINGS

        return list(NAUGHTY_STRINGS) + _NAUGHTY_SUBSET
    except ImportError:  # spaCy installed without its test suite
        return list(_NAUGHTY_SUBSET)


EDGE_TEXTS = [
    "",
    " ",
    "\n\n\t  \n",
    "\u200b",
    "\x00",
    "John Smith\x00 visited Paris\x00.",
    "Barack\u200bObama met Angela Merkel in Berlin \u200b.",
    "😀 Emma Watson 👩‍👩‍👧‍👦 went to London 🇬🇧 yesterday 🎉",
    "مرحبا بكم في القاهرة مع محمد صلاح",
    "שלום ירושלים",
    "Mixed \u202bعربي\u202c and English: Google in Mountain View.",
    "Tab\tseparated\tNew York\tTimes",
    "ZWJ family 👨‍👩‍👧 and skin 👍🏽 in Tokyo",
    "https://example.com/" + "a" * 5000,
    "x" * 5000,
]


def make_nlp(
    *,
    width: int = 32,
    depth: int = 1,
    n_heads: int = 2,
    max_length: int = 512,
    window_overlap: int = 128,
    max_batch_tokens: int = 16384,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    positions: str = "rotary",
    crf: bool = False,
    mixed_precision: bool = False,
    rows: Sequence[int] = (1000, 500, 500, 500),
    seed: int = 0,
) -> Language:
    """A blank English pipeline with an uninitialized, small `vanilla_ner`.
    The torch weights are created here, so seed first (`seed`)."""
    fix_random_seed(seed)
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "vanilla_ner",
        config={
            "crf": crf,
            "model": {
                "@architectures": "spacy-vanilla-ner.NERTagger.v1",
                "tok2vec": {
                    "@architectures": "spacy-vanilla-ner.TransformerTok2Vec.v1",
                    "width": width,
                    "depth": depth,
                    "n_heads": n_heads,
                    "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
                    "rows": list(rows),
                    "include_static_vectors": False,
                    "dropout": dropout,
                    "attention_dropout": attention_dropout,
                    "positions": positions,
                    "max_length": max_length,
                    "window_overlap": window_overlap,
                    "max_batch_tokens": max_batch_tokens,
                    "mixed_precision": mixed_precision,
                },
            },
        },
    )
    return nlp


def fixture_examples(
    nlp: Language, limit: Optional[int] = None, path: Path = FIXTURE
) -> List[Example]:
    """The CoNLL file at `path` (the WikiGold fixture) as training examples."""
    docs = conll_to_docs(path, nlp.vocab, limit=limit)
    return [Example(nlp.make_doc(doc.text), doc) for doc in docs]


def train(
    nlp: Language,
    examples: List[Example],
    *,
    n_epochs: int = 12,
    batch_size: int = 16,
    seed: int = 0,
    learn_rate: float = 0.003,
) -> List[float]:
    """Initialize and train `nlp` on `examples`. RETURNS: the loss per epoch."""
    fix_random_seed(seed)
    optimizer = nlp.initialize(lambda: examples)
    optimizer.learn_rate = learn_rate
    losses_per_epoch = []
    for _ in range(n_epochs):
        losses: Dict[str, float] = {}
        for i in range(0, len(examples), batch_size):
            nlp.update(examples[i : i + batch_size], sgd=optimizer, losses=losses)
        losses_per_epoch.append(losses["vanilla_ner"])
    return losses_per_epoch


def ents_of(docs: Sequence[Doc]) -> List[List[Tuple[int, int, str]]]:
    return [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in docs]


def run_script(
    code: str, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 180
) -> dict:
    """Run `code` as a script in a fresh Python process; it must print one JSON
    object as its last line of stdout. A hang fails the test (timeout). The
    script can `from tests.helpers import ...` (the repository is on its
    PYTHONPATH)."""
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), full_env.get("PYTHONPATH")) if p
    )
    full_env.update(env or {})
    # A file rather than `-c`, so that spawned worker processes can re-import
    # the main module. A session of its own, so that a hang (e.g. forked
    # workers deadlocked) is killed whole, workers included.
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "script.py"
        script.write_text(textwrap.dedent(code), encoding="utf8")
        proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            cwd=str(REPO),
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"subprocess still running after {timeout} s (hang?): {args}")
    assert proc.returncode == 0, f"subprocess failed:\n{stdout[-3000:]}\n{stderr[-5000:]}"
    return json.loads(stdout.strip().splitlines()[-1])


def assert_valid_ents(doc):
    """Entities lie inside the text, match their characters, do not overlap and
    neither start nor end on whitespace."""
    text = doc.text  # built on each access: O(len(doc))
    last_end = 0
    for ent in doc.ents:
        assert 0 <= ent.start_char < ent.end_char <= len(text)
        assert ent.text == text[ent.start_char : ent.end_char]
        assert ent.start >= last_end
        last_end = ent.end
        assert not doc[ent.start].is_space and not doc[ent.end - 1].is_space


def words_doc(vocab, n, seed=0):
    """A doc of `n` tokens drawn from the fixture's vocabulary (entity-like words included)."""
    lines = FIXTURE.read_text(encoding="utf8").splitlines()
    words = [line.split()[0] for line in lines if line.strip()]
    words = [w for w in words if w != "-DOCSTART-"]
    rng = numpy.random.RandomState(seed)
    return Doc(vocab, words=[words[i] for i in rng.randint(0, len(words), size=n)])


def encoder_module(model):
    """The WindowedEncoder inside a vanilla_ner pipeline or an encoder model."""
    for node in model.walk():
        if node.shims:
            return node.shims[0]._model
    raise AssertionError("no torch shim")


def record_windows(nlp):
    """Record the (B, T) shape of every padded chunk the encoder runs."""
    shapes = []
    module = encoder_module(nlp.get_pipe("vanilla_ner").model).encoder
    handle = module.register_forward_pre_hook(lambda mod, args: shapes.append(tuple(args[1].shape)))
    return shapes, handle


ENCODER_WIDTH = 32


def make_encoder(**kwargs):
    """A small TransformerEncoder.v1 (ENCODER_WIDTH wide), initialized, with
    weights large enough that tokens clearly interact (at the GPT-2 style init,
    attention barely moves the residual stream)."""
    from spacy_vanilla_ner.models.encoder import build_transformer_encoder_v1

    fix_random_seed(0)
    settings = dict(width=ENCODER_WIDTH, depth=2, n_heads=4, dropout=0.0, attention_dropout=0.0)
    settings.update(kwargs)
    model = build_transformer_encoder_v1(**settings)
    model.initialize()
    with torch.no_grad():
        for module in encoder_module(model).modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=0.3)
    return model


def encoder_inputs(lengths, seed=0):
    """Random (n, ENCODER_WIDTH) token vectors for docs of the given lengths."""
    rng = numpy.random.default_rng(seed)
    return [rng.normal(size=(n, ENCODER_WIDTH)).astype("float32") for n in lengths]


POS_DATA = [("I like green eggs", ["N", "V", "J", "N"]), ("Eat blue ham", ["V", "J", "N"])]


def fit_pos_tags(nlp, steps=60):
    """Train a pipeline's `tagger` on two tagged sentences (as spaCy's own
    tagger tests do); check that the loss falls and the tags are learned."""
    examples = [Example.from_dict(nlp.make_doc(t), {"tags": tags}) for t, tags in POS_DATA]
    fix_random_seed(0)
    optimizer = nlp.initialize(lambda: examples)
    history = []
    for _ in range(steps):
        losses = {}
        nlp.update(examples, sgd=optimizer, losses=losses)
        history.append(losses["tagger"])
    assert history[-1] < 0.05 * history[0]
    assert [t.tag_ for t in nlp("I like blue eggs")] == ["N", "V", "J", "N"]


def tagger_model_with_encoder(
    encode, width, attrs=("NORM", "PREFIX", "SUFFIX", "SHAPE"), rows=(5000, 1000, 2500, 2500)
):
    """A NERTagger.v1 config over spacy.Tok2Vec.v2 with hashed features and the
    given `encode` block: the one place a test swaps encoders."""
    return {
        "@architectures": "spacy-vanilla-ner.NERTagger.v1",
        "tok2vec": {
            "@architectures": "spacy.Tok2Vec.v2",
            "embed": {
                "@architectures": "spacy.MultiHashEmbed.v2",
                "width": width,
                "attrs": list(attrs),
                "rows": list(rows),
                "include_static_vectors": False,
            },
            "encode": encode,
        },
    }


def copy_project(dest: Path) -> Path:
    """A copy of the spaCy project (project.yml, configs, scripts and the shipped WikiGold
    split) in `dest`, to run `spacy project run` in."""
    import shutil

    shutil.copy(REPO / "project.yml", dest / "project.yml")
    shutil.copytree(REPO / "assets" / "wikigold", dest / "assets" / "wikigold")
    shutil.copytree(REPO / "configs", dest / "configs")
    shutil.copytree(REPO / "scripts", dest / "scripts")
    return dest


def edit_config(path: Path, values: Dict[str, object]) -> None:
    """Set `section.key` values in the config file at `path`, as a user editing it would
    (project.yml passes no training setting to `spacy train`)."""
    from spacy.util import load_config

    config = load_config(path, interpolate=False)
    for dotted, value in values.items():
        *sections, key = dotted.split(".")
        node = config
        for section in sections:
            node = node[section]
        node[key] = value
    config.to_disk(path)
