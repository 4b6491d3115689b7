"""Fixtures and helpers for `test_reliability.py`: small pipelines, a briefly
trained one, pathological inputs, and a runner for scripts in a fresh process.

Kept out of `conftest.py` (owned by the package lead); `test_reliability.py`
imports the fixtures from here.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
import spacy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import fix_random_seed

from spacy_vanilla_ner.convert import conll_to_docs

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "wikigold-100.conll"
LABELS = ("LOC", "MISC", "ORG", "PER")

# Representative subset of spaCy's tests/tokenizer/test_naughty_strings.py
# ("Big List of Naughty Strings"); the full list is used when spaCy's tests
# are installed.
_NAUGHTY_SUBSET = [
    r",./;'[]\-=",
    r'<>?:"{}|_+',
    "\u00ad\u0600\u0601\u0602\u0603\u0604\u0605\u061c\u06dd\u070f\u180e\u200b\u200c\u200d\u200e\u200f\u202a",
    "\ufffe",
    "Ω≈ç√∫˜µ≤≥÷",
    "ЁЂЃЄЅІЇЈЉЊЋЌЍЎЏАБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯабвгдежзийклмнопрстуфхцчшщъыьэюя",
    "٠١٢٣٤٥٦٧٨٩",
    "田中さんにあげて下さい",
    "和製漢語",
    "𜎀𜎁𜎂",
    "Ṱ̺̺̕o͞ ̷i̲̬͇̪͙n̝̗͕v̟̜̘̦͟o̶̙̰̠kè͚̮̺̪̹̱̤ ̖t̝͕̳̣̻̪͞h̼͓̲̦̳̘̲e͇̣̰̦̬͎ ̢̼̻̱̘h͚͎͙̜̣̲ͅi̦̲̣̰̤v̻͍e̺̭̳̪̰-m̢iͅn̖̺̞̲̯̰d̵̼̟͙̩̼̘̳ ̞̥̱̳̭r̛̗̘e͙p͠r̼̞̻̭̗e̺̠̣͟s̘͇̳͍̝͉e͉̥̯̞̲͚̬͜ǹ̬͎͎̟̖͇̤t͍̬̤͓̼̭͘ͅi̪̱n͠g̴͉ ͏͉ͅc̬̟h͡a̫̻̯͘o̫̟̖͍̙̝͉s̗̦̲.̨̹͈̣",
    "˙ɐnbᴉlɐ ɐuƃɐɯ ǝɹolop ʇǝ ǝɹoqɐl ʇn ʇunpᴉpᴉɔuᴉ ɹodɯǝʇ poɯsnᴉǝ op pǝs 'ʇᴉlǝ ƃuᴉɔsᴉdᴉpɐ ɹnʇǝʇɔǝsuoɔ 'ʇǝɯɐ ʇᴉs ɹolop ɯnsdᴉ ɯǝɹo˥",
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


# Text with entities next to the characters that break naive offset handling.
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


def fixture_examples(nlp: Language, limit: Optional[int] = None) -> List[Example]:
    docs = conll_to_docs(FIXTURE, nlp.vocab, limit=limit)
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
    for epoch in range(n_epochs):
        losses: Dict[str, float] = {}
        for i in range(0, len(examples), batch_size):
            nlp.update(examples[i : i + batch_size], sgd=optimizer, losses=losses)
        losses_per_epoch.append(losses["vanilla_ner"])
    return losses_per_epoch


def ents_of(docs: Sequence[Doc]) -> List[List[Tuple[int, int, str]]]:
    return [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in docs]


def run_script(code: str, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 180) -> dict:
    """Run `code` as a script in a fresh Python process; it must print one JSON
    object as its last line of stdout. A hang fails the test (timeout)."""
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", "1")
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
            pytest.fail(f"subprocess still running after {timeout} s (hang?): {script.name} {args}")
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained_nlp() -> Language:
    """`vanilla_ner` (32 wide, 1 layer) trained briefly on the 100-sentence
    WikiGold fixture: good enough to predict entities on it."""
    nlp = make_nlp()
    examples = fixture_examples(nlp)
    train(nlp, examples, n_epochs=12)
    return nlp


@pytest.fixture(scope="module")
def trained_path(trained_nlp, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reliability") / "model"
    trained_nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def dev_texts() -> List[str]:
    nlp = spacy.blank("en")
    return [doc.text for doc in conll_to_docs(FIXTURE, nlp.vocab)]
