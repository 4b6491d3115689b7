"""Reliability: bad input, long documents, batching, processes, serialization,
bad training data, forced-invalid decoding, determinism and (where there is a
GPU) device moves. One test (or a few) per row of RELIABILITY.md; the mapping
is in docs/reliability.md.

Most tests share one small `vanilla_ner` pipeline (32 wide, 1 layer) trained
for a few seconds on tests/fixtures/wikigold-100.conll.
"""
import json
import math
import pickle
import sys
import warnings
from pathlib import Path

import numpy
import pytest
import spacy
import torch
from spacy.tokens import Doc
from spacy.training import Example, biluo_tags_to_spans
from thinc.api import fix_random_seed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reliability_helpers import (  # noqa: E402
    EDGE_TEXTS,
    FIXTURE,
    dev_texts,
    ents_of,
    fixture_examples,
    make_nlp,
    naughty_strings,
    run_script,
    train,
    trained_nlp,
    trained_path,
)
from spacy_vanilla_ner.architectures import build_transformer_encoder_v1  # noqa: E402
from spacy_vanilla_ner.decoding import is_valid, tag_names  # noqa: E402
from spacy_vanilla_ner.layers import build_window_batch, plan_windows  # noqa: E402
from spacy_vanilla_ner.torch_modules import EncoderConfig, TransformerEncoderModule  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
try:
    import cupy  # noqa: F401

    HAS_CUPY = True
except ImportError:
    HAS_CUPY = False

requires_gpu = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
requires_spacy_gpu = pytest.mark.skipif(
    not (HAS_CUDA and HAS_CUPY), reason="needs a CUDA GPU and cupy (spacy.require_gpu)"
)


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
    words = [w for line in FIXTURE.read_text(encoding="utf8").splitlines() if line.strip()
             for w in [line.split()[0]] if w != "-DOCSTART-"]
    rng = numpy.random.RandomState(seed)
    return Doc(vocab, words=[words[i] for i in rng.randint(0, len(words), size=n)])


# --- Empty and whitespace-only docs, anywhere in a batch --------------------------------

EMPTY_KINDS = ["empty-text", "empty-words", "whitespace"]


def make_empty(nlp, kind):
    if kind == "empty-text":
        return nlp.make_doc("")
    if kind == "empty-words":
        return Doc(nlp.vocab, words=[])
    return nlp.make_doc("  \n\t \n ")


@pytest.mark.parametrize("kind", EMPTY_KINDS)
@pytest.mark.parametrize("position", ["alone", "first", "middle", "last"])
def test_empty_and_whitespace_docs_in_batch(trained_nlp, dev_texts, kind, position):
    others = dev_texts[:4]
    expected = ents_of([trained_nlp(t) for t in others])
    docs = [trained_nlp.make_doc(t) for t in others]
    empty = make_empty(trained_nlp, kind)
    where = {"alone": None, "first": 0, "middle": 2, "last": len(docs)}[position]
    batch = [empty] if where is None else docs[:where] + [empty] + docs[where:]
    out = list(trained_nlp.pipe(batch, batch_size=16))
    empty_out = out[0 if where is None else where]
    assert len(empty_out.ents) == 0
    assert all(t.ent_iob_ in ("O", "") for t in empty_out)
    if where is not None:
        rest = out[:where] + out[where + 1 :]
        assert ents_of(rest) == expected
    assert trained_nlp("").ents == ()


def test_only_empty_docs(trained_nlp):
    docs = [trained_nlp.make_doc(""), Doc(trained_nlp.vocab, words=[]), trained_nlp.make_doc("   ")]
    assert [d.ents for d in trained_nlp.pipe(docs)] == [(), (), ()]


# --- 5,000-character tokens, naughty strings, emoji, RTL, NUL, zero-width -------------

@pytest.mark.parametrize("text", EDGE_TEXTS, ids=range(len(EDGE_TEXTS)))
def test_edge_texts(trained_nlp, text):
    doc = trained_nlp(text)
    assert doc.text == text
    assert_valid_ents(doc)


def test_5000_char_tokens(trained_nlp):
    base64ish = "QUJD" * 1250
    url = "https://example.com/?q=" + "z" * 4977
    for token in (base64ish, url, "x" * 5000):
        doc = trained_nlp(f"Paris {token} London")
        assert any(len(t) >= 5000 for t in doc)
        assert_valid_ents(doc)
    # Alone, and in a batch with normal docs, output for the normal docs is unchanged.
    texts = ["John Smith lives in Paris .", "x" * 5000, "Google is in California ."]
    alone = ents_of([trained_nlp(t) for t in texts])
    assert ents_of(list(trained_nlp.pipe(texts))) == alone


def test_naughty_strings(trained_nlp):
    strings = naughty_strings()
    assert len(strings) >= 20
    # Alone and all together, and wrapped around an entity-like context.
    wrapped = [f"{s} John Smith visited {s} Paris {s}" for s in strings]
    for docs in (list(trained_nlp.pipe(strings)), list(trained_nlp.pipe(wrapped, batch_size=7))):
        for doc in docs:
            assert_valid_ents(doc)
    for s in strings[:10]:
        assert_valid_ents(trained_nlp(s))


def test_naughty_strings_in_training(dev_texts):
    # Training on pathological text (no entities) next to normal text: finite loss.
    nlp = make_nlp()
    examples = fixture_examples(nlp, limit=8)
    examples += [Example(nlp.make_doc(s), nlp.make_doc(s)) for s in naughty_strings()[:30] + EDGE_TEXTS]
    losses = train(nlp, examples, n_epochs=2, batch_size=8)
    assert all(math.isfinite(loss) for loss in losses)


# --- Long docs and windowing ----------------------------------------------------------

@pytest.mark.parametrize("n_tokens", [511, 512, 513, 1024, 1537])
def test_long_docs(trained_nlp, n_tokens):
    doc = trained_nlp(words_doc(trained_nlp.vocab, n_tokens))
    assert len(doc) == n_tokens
    assert_valid_ents(doc)


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


def test_50k_token_doc_memory_is_bounded_by_window(trained_nlp):
    # The 50,000-token doc runs as chunks of windows of at most max_length
    # tokens, never more than max(max_batch_tokens, max_length) padded tokens at once.
    shapes, handle = record_windows(trained_nlp)
    try:
        doc = trained_nlp(words_doc(trained_nlp.vocab, 50_000, seed=1))
    finally:
        handle.remove()
    assert len(doc) == 50_000
    assert_valid_ents(doc)
    assert shapes and all(T <= 512 and B * T <= 16384 for B, T in shapes)
    assert sum(B for B, _ in shapes) == len(plan_windows(50_000, 512, 128))


@pytest.mark.parametrize(
    "lengths,max_length,overlap,max_batch_tokens",
    [
        ([50_000], 512, 128, 16384),
        ([0, 1, 700, 3, 0], 512, 128, 16384),
        ([511, 512, 513, 1024, 50_000, 7], 512, 128, 2048),
        ([100, 37, 16, 15, 17, 0], 16, 4, 40),
        ([33], 16, 8, 1),  # max_batch_tokens below max_length: one window per chunk
        ([20, 20], 16, 0, 64),
    ],
)
def test_window_batch_shapes_and_tiling(lengths, max_length, overlap, max_batch_tokens):
    batch = build_window_batch(lengths, max_length, overlap, max_batch_tokens, torch.device("cpu"))
    n_tokens = sum(lengths)
    rows = 0
    covered = []
    for gather, mask in batch.chunks:
        B, T = gather.shape
        assert T <= max_length
        assert B * T <= max(max_batch_tokens, max_length)
        assert mask.shape == (B, T)
        # Padding gathers the zero row (index n_tokens), real positions real tokens.
        assert bool((gather[~mask] == n_tokens).all()) and bool((gather[mask] < n_tokens).all())
        covered.append((rows, gather.reshape(-1), mask.reshape(-1)))
        rows += B * T
    # Every token takes its output from exactly one position that holds that token.
    index = batch.output_index
    assert index.shape == (n_tokens,) and len(set(index.tolist())) == n_tokens
    flat_gather = torch.cat([g for _, g, _ in covered]) if covered else torch.zeros(0, dtype=torch.long)
    flat_mask = torch.cat([m for _, _, m in covered]) if covered else torch.zeros(0, dtype=torch.bool)
    assert bool(flat_mask[index].all())
    assert flat_gather[index].tolist() == list(range(n_tokens))


@pytest.mark.parametrize("positions", ["rotary", "sinusoidal", "learned", "none"])
def test_windowed_output_equals_each_owning_window_alone(positions):
    # A doc longer than max_length: each token's output is exactly its owning
    # window's output when that window is run as a doc on its own.
    fix_random_seed(0)
    model = build_transformer_encoder_v1(
        16, 2, 2, max_length=16, window_overlap=4, dropout=0.0, attention_dropout=0.0, positions=positions
    )
    rng = numpy.random.RandomState(0)
    docs = [rng.normal(size=(n, 16)).astype("f") for n in (50, 16, 17, 3)]
    model.initialize(X=docs)
    outputs = model.predict(docs)
    for X, Y in zip(docs, outputs):
        for start, end, own_start, own_end in plan_windows(len(X), 16, 4):
            alone = model.predict([X[start:end]])[0]
            numpy.testing.assert_allclose(
                Y[own_start:own_end], alone[own_start - start : own_end - start], atol=1e-5
            )


def test_windowed_encoder_close_to_single_window():
    # Same weights, max_length=16 (windowed) vs 64 (one window): close everywhere.
    fix_random_seed(0)
    kwargs = dict(dropout=0.0, attention_dropout=0.0, positions="rotary")
    small = build_transformer_encoder_v1(16, 2, 2, max_length=16, window_overlap=4, **kwargs)
    big = build_transformer_encoder_v1(16, 2, 2, max_length=64, window_overlap=4, **kwargs)
    X = numpy.random.RandomState(0).normal(size=(50, 16)).astype("f")
    small.initialize(X=[X])
    big.initialize(X=[X])
    encoder_module(big).load_state_dict(encoder_module(small).state_dict())
    Ys, Yb = small.predict([X])[0], big.predict([X])[0]
    # The first window's own tokens see nothing different before the cut...
    rel = numpy.abs(Ys - Yb).mean(axis=1) / numpy.abs(Yb).mean()
    assert rel.max() < 0.02, rel


def _reload_with_window(trained_nlp, max_length, overlap):
    """The trained weights in a pipeline windowing at `max_length`."""
    nlp = make_nlp(max_length=max_length, window_overlap=overlap)
    nlp.get_pipe("vanilla_ner").from_bytes(trained_nlp.get_pipe("vanilla_ner").to_bytes())
    # The saved window settings (thinc attrs) override the config on load; see
    # test_window_settings_from_config_apply_on_load. Set them back here.
    for node in nlp.get_pipe("vanilla_ner").model.walk():
        if "window_overlap" in node.attrs:
            node.attrs.update(max_length=max_length, window_overlap=overlap)
    return nlp


@pytest.mark.parametrize("max_length,overlap,doc_length", [(512, 128, 600), (64, 16, 100)])
def test_entities_near_window_edges_agree_with_single_window(
    trained_nlp, dev_texts, max_length, overlap, doc_length
):
    # Docs of 1-2x max_length from consecutive fixture sentences, run windowed
    # and as one window with the same weights. (Much longer single windows
    # differ for another reason: attention spread over thousands of tokens
    # by a model trained on sentences.)
    docs, current = [], []
    for text in dev_texts:
        current.append(text)
        if len(trained_nlp.make_doc(" ".join(current))) >= doc_length:
            docs.append(" ".join(current))
            current = []
    windowed_nlp = _reload_with_window(trained_nlp, max_length, overlap)
    single_nlp = _reload_with_window(trained_nlp, 4096, 128)
    counts = {"all": [0, 0], "near_edge": [0, 0]}  # [agreeing, union]
    for text in docs:
        windowed, single = windowed_nlp(text), single_nlp(text)
        assert max_length < len(single) <= 2 * max_length + 60
        ents_w = {(e.start, e.end, e.label_) for e in windowed.ents}
        ents_s = {(e.start, e.end, e.label_) for e in single.ents}
        windows = plan_windows(len(windowed), max_length, overlap)
        cuts = [w[0] for w in windows[1:]] + [w[1] for w in windows[:-1]]
        near = lambda ents: {e for e in ents if min(abs(e[0] - c) for c in cuts) < 8}
        counts["all"][0] += len(ents_w & ents_s)
        counts["all"][1] += len(ents_w | ents_s)
        counts["near_edge"][0] += len(near(ents_w) & near(ents_s))
        counts["near_edge"][1] += len(near(ents_w) | near(ents_s))
    assert counts["all"][1] > 100 and counts["near_edge"][1] >= 10, counts
    agreement = {k: agree / union for k, (agree, union) in counts.items()}
    assert min(agreement.values()) >= 0.93, agreement


def test_window_settings_from_config_apply_on_load(trained_nlp):
    # A model trained with max_length=512, loaded with max_length=64 in its
    # config (valid for rotary positions): it should window at 64, not crash.
    nlp = make_nlp(max_length=64, window_overlap=16)
    nlp.get_pipe("vanilla_ner").from_bytes(trained_nlp.get_pipe("vanilla_ner").to_bytes())
    shapes, handle = record_windows(nlp)
    try:
        nlp(words_doc(nlp.vocab, 300))
    finally:
        handle.remove()
    assert all(T <= 64 for _, T in shapes)


# --- Batch composition ----------------------------------------------------------------

def test_same_entities_for_batch_sizes_1_2_128(trained_nlp, dev_texts):
    vocab = trained_nlp.vocab
    docs = [words_doc(vocab, n, seed=i) for i, n in enumerate([0, 1, 700, 3, 0])]
    docs += [trained_nlp.make_doc(t) for t in dev_texts[:20]]
    docs += [words_doc(vocab, n, seed=10 + i) for i, n in enumerate([0, 1, 700, 3, 0])]
    results = {}
    for batch_size in (1, 2, 128):
        copies = [Doc(vocab).from_bytes(d.to_bytes()) for d in docs]
        results[batch_size] = ents_of(list(trained_nlp.pipe(copies, batch_size=batch_size)))
    assert results[1] == results[2] == results[128]
    assert sum(len(e) for e in results[1]) > 10


def test_scores_do_not_depend_on_padding(trained_nlp):
    model = trained_nlp.get_pipe("vanilla_ner").model
    vocab = trained_nlp.vocab
    docs = [words_doc(vocab, n, seed=i) for i, n in enumerate([0, 1, 700, 3, 0])]
    together = model.predict(docs)
    for doc, scores in zip(docs, together):
        alone = model.predict([doc])[0]
        numpy.testing.assert_allclose(scores, alone, atol=1e-5)


# --- Processes ------------------------------------------------------------------------

MULTIPROCESS_SCRIPT = """
import json, multiprocessing, sys

def main():
    method, path, texts_path = sys.argv[1:4]
    multiprocessing.set_start_method(method, force=True)
    import spacy
    nlp = spacy.load(path)
    texts = json.load(open(texts_path, encoding="utf8"))
    # Serial first, so torch's thread pools exist before the fork (spaCy #6662).
    serial = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
    parallel = [[(e.start_char, e.end_char, e.label_) for e in d.ents]
                for d in nlp.pipe(texts, n_process=2, batch_size=10)]
    print(json.dumps({"serial": serial, "parallel": parallel}))

if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize(
    "method", ["fork", "spawn"]
)
def test_pipe_n_process_2_equals_serial(trained_path, dev_texts, tmp_path, method):
    texts = dev_texts[:40] + ["", "   ", "x" * 5000, "😀 Emma Watson in London"]
    texts_path = tmp_path / "texts.json"
    texts_path.write_text(json.dumps(texts), encoding="utf8")
    out = run_script(
        MULTIPROCESS_SCRIPT, method, str(trained_path), str(texts_path),
        env={"OMP_NUM_THREADS": "2"}, timeout=120,
    )
    assert out["parallel"] == out["serial"]
    assert sum(len(e) for e in out["serial"]) > 10


# --- Serialization --------------------------------------------------------------------

def test_bytes_round_trip_identical(trained_nlp, dev_texts):
    data = trained_nlp.to_bytes()
    nlp2 = make_nlp()
    nlp2.from_bytes(data)
    assert ents_of(list(nlp2.pipe(dev_texts))) == ents_of(list(trained_nlp.pipe(dev_texts)))
    assert nlp2.to_bytes() == data
    assert nlp2.get_pipe("vanilla_ner").labels == trained_nlp.get_pipe("vanilla_ner").labels


def test_disk_round_trip_identical(trained_nlp, trained_path, dev_texts, tmp_path):
    nlp2 = spacy.load(trained_path)
    assert ents_of(list(nlp2.pipe(dev_texts))) == ents_of(list(trained_nlp.pipe(dev_texts)))
    nlp2.to_disk(tmp_path / "again")
    for name in ("model", "cfg"):
        assert (tmp_path / "again" / "vanilla_ner" / name).read_bytes() == (
            trained_path / "vanilla_ner" / name
        ).read_bytes()
    assert nlp2.to_bytes() == trained_nlp.to_bytes()


def test_pickle_round_trip(trained_nlp, dev_texts):
    nlp2 = pickle.loads(pickle.dumps(trained_nlp))
    assert ents_of(list(nlp2.pipe(dev_texts))) == ents_of(list(trained_nlp.pipe(dev_texts)))
    assert nlp2.get_pipe("vanilla_ner").to_bytes() == trained_nlp.get_pipe("vanilla_ner").to_bytes()


LOAD_SCRIPT = """
import json, sys
import spacy
nlp = spacy.load(sys.argv[1])
texts = json.load(open(sys.argv[2], encoding="utf8"))
ents = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
import torch
devices = sorted({str(p.device) for node in nlp.get_pipe("vanilla_ner").model.walk()
                  for shim in node.shims for p in shim._model.parameters()})
print(json.dumps({"ents": ents, "devices": devices, "cuda": torch.cuda.is_available()}))
"""


def test_spacy_load_in_fresh_process(trained_nlp, trained_path, dev_texts, tmp_path):
    texts_path = tmp_path / "texts.json"
    texts_path.write_text(json.dumps(dev_texts), encoding="utf8")
    out = run_script(LOAD_SCRIPT, str(trained_path), str(texts_path))
    expected = ents_of(list(trained_nlp.pipe(dev_texts)))
    assert [[tuple(e) for e in doc] for doc in out["ents"]] == expected


# --- initialize() -----------------------------------------------------------------------

def test_initialize_without_labels_or_examples():
    nlp = make_nlp()
    with pytest.raises(ValueError, match=r"vanilla_ner.*labels"):
        nlp.initialize()
    # Examples without any entities: the same.
    nlp = make_nlp()
    with pytest.raises(ValueError, match=r"vanilla_ner.*labels"):
        nlp.initialize(lambda: [Example(nlp.make_doc("no entities here"), nlp.make_doc("no entities here"))])


@pytest.mark.parametrize(
    "get_examples", [None, lambda: None, lambda: [], [], "not callable"], ids=["None", "returns-None", "returns-empty", "list", "str"]
)
def test_initialize_bad_get_examples(get_examples):
    nlp = make_nlp()
    ner = nlp.get_pipe("vanilla_ner")
    with pytest.raises((TypeError, ValueError), match=r"get_examples|E930|labels"):
        ner.initialize(get_examples, nlp=nlp)


def test_initialize_with_labels_and_no_examples():
    # Labels given (as from `spacy init labels`): no entities in the data needed.
    nlp = make_nlp()
    nlp.get_pipe("vanilla_ner").add_label("PER")
    nlp.initialize()
    assert nlp.get_pipe("vanilla_ner").labels == ("PER",)
    assert nlp("Hello world").ents == ()


# --- Bad gold ---------------------------------------------------------------------------

def test_overlapping_gold_spans_clear_error():
    nlp = make_nlp()
    doc = nlp.make_doc("Bank of New York City")
    with pytest.raises(ValueError, match=r"E103|overlap"):
        Example.from_dict(doc, {"entities": [(0, 16, "ORG"), (8, 21, "LOC")]})
    with pytest.raises(ValueError, match=r"E103|E1010|overlap|more than one span"):
        doc.ents = [doc.char_span(0, 16, "ORG"), doc.char_span(8, 21, "LOC")]


def test_misaligned_gold_warns_and_is_missing_in_loss(trained_nlp):
    ner = trained_nlp.get_pipe("vanilla_ner")
    # Offsets that cut through tokens: W030, and those tokens get no gold.
    doc = trained_nlp.make_doc("He moved to New York City last year")
    with pytest.warns(UserWarning, match="W030"):
        eg1 = Example.from_dict(doc, {"entities": [(14, 24, "LOC"), (0, 2, "PER")]})
    # Reference tokenization in which an entity ends inside a predicted token.
    ref = Doc(trained_nlp.vocab, words=["A", "New", "York", "er", "said"],
              spaces=[True, True, False, True, False], ents=["O", "B-LOC", "I-LOC", "O", "O"])
    pred = Doc(trained_nlp.vocab, words=["A", "New", "Yorker", "said"], spaces=[True, True, True, False])
    eg2 = Example(pred, ref)
    examples = [eg1, eg2]
    aligned = [eg.get_aligned_ner() for eg in examples]
    missing = [numpy.array([tag is None for tag in a]) for a in aligned]
    assert missing[0].tolist() == [False, False, False, True, True, True, False, False]
    assert missing[1].tolist() == [False, True, True, False]
    scores, _ = ner.model.begin_update([eg.predicted for eg in examples])
    loss, d_scores = ner.get_loss(examples, scores)
    assert math.isfinite(loss)
    for d, miss in zip(d_scores, missing):
        d = ner.model.ops.to_numpy(d)
        assert (d[miss] == 0).all()
        assert (numpy.abs(d[~miss]).sum(axis=1) > 0).all()  # O / known tags do train


def test_misaligned_gold_is_not_trained_as_O():
    # Two gold versions of one doc: entity misaligned, and the same tokens gold O.
    # Their losses must differ (missing contributes nothing; O would).
    nlp = make_nlp()
    nlp.get_pipe("vanilla_ner").add_label("LOC")
    nlp.initialize()
    ner = nlp.get_pipe("vanilla_ner")
    text = "He moved to New York City"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        misaligned = Example.from_dict(nlp.make_doc(text), {"entities": [(14, 24, "LOC")]})
    outside = Example.from_dict(nlp.make_doc(text), {"entities": []})
    scores = ner.model.predict([misaligned.predicted])
    loss_missing, _ = ner.get_loss([misaligned], scores)
    loss_outside, _ = ner.get_loss([outside], scores)
    n_tags = len(tag_names(ner.labels))
    # Untrained softmax is uniform: each known token costs log(n_tags).
    assert loss_missing == pytest.approx(3 * math.log(n_tags), rel=1e-4)
    assert loss_outside == pytest.approx(6 * math.log(n_tags), rel=1e-4)


# --- Untrained model ------------------------------------------------------------------

def test_untrained_model_predicts_no_entities():
    nlp = make_nlp()
    # Not initialized at all.
    assert nlp("Angela Merkel visited Paris .").ents == ()
    # Initialized, never updated (zero-initialized softmax: uniform, ties decode to O).
    nlp.get_pipe("vanilla_ner").add_label("PER")
    nlp.get_pipe("vanilla_ner").add_label("LOC")
    nlp.initialize()
    docs = list(nlp.pipe(["Angela Merkel visited Paris .", "", "x" * 5000, "London"]))
    assert all(doc.ents == () for doc in docs)


# --- Forced invalid BILUO ---------------------------------------------------------------

def test_forced_invalid_biluo_is_repaired(monkeypatch):
    nlp = make_nlp()
    ner = nlp.get_pipe("vanilla_ner")
    for label in ("ORG", "PER"):
        ner.add_label(label)
    nlp.initialize()
    names = ner.tag_names  # O, B-ORG, I-ORG, L-ORG, U-ORG, B-PER, I-PER, L-PER, U-PER
    ids = {name: i for i, name in enumerate(names)}
    forced = {
        "I first": ["I-ORG", "L-ORG", "O", "O", "O"],
        "B then O": ["B-PER", "O", "O", "U-ORG", "O"],
        "lone L": ["O", "O", "L-PER", "O", "O"],
        "label switch": ["B-PER", "I-ORG", "L-ORG", "O", "O"],
        "B at end": ["O", "O", "O", "O", "B-ORG"],
        "all I": ["I-PER", "I-PER", "I-PER", "I-PER", "I-PER"],
        "U on whitespace": ["U-ORG", "U-ORG", "U-ORG", "O", "O"],
        "valid": ["B-ORG", "L-ORG", "O", "U-PER", "O"],
    }
    docs = []
    for name in forced:
        if name == "U on whitespace":
            doc = nlp.make_doc("Acme  Inc c d")  # the double space is a whitespace token
            assert doc[1].is_space
        else:
            doc = nlp.make_doc("a b c d e")
        assert len(doc) == 5
        docs.append(doc)
    probs = []
    for tags in forced.values():
        p = numpy.full((5, len(names)), 0.02 / (len(names) - 1), dtype="f")
        for i, tag in enumerate(tags):
            p[i, ids[tag]] = 0.98
        probs.append(p)
    model_predict = type(ner.model).predict  # instances have no __dict__: patch the class

    def forced_predict(model, docs):
        if model is ner.model:
            return [probs[i] for i in range(len(docs))]
        return model_predict(model, docs)

    monkeypatch.setattr(type(ner.model), "predict", forced_predict)
    before = ner.n_repaired
    tag_ids = ner.predict(docs)
    assert ner.n_repaired - before == len(forced) - 1  # all but "valid"
    for doc, tags in zip(docs, tag_ids):
        space = [t.is_space for t in doc]
        assert is_valid(tags, 2, space)
        biluo_tags_to_spans(doc, [names[t] for t in tags])  # would raise E067 if invalid
    ner.set_annotations(docs, tag_ids)
    for doc in docs:
        assert_valid_ents(doc)
    valid_doc = docs[list(forced).index("valid")]
    assert [(e.start, e.end, e.label_) for e in valid_doc.ents] == [(0, 2, "ORG"), (3, 4, "PER")]


def test_n_repaired_counts_on_real_pipeline(trained_nlp, dev_texts):
    ner = trained_nlp.get_pipe("vanilla_ner")
    before = ner.n_repaired
    docs = list(trained_nlp.pipe(dev_texts))
    assert 0 <= ner.n_repaired - before <= len(docs)
    for doc in docs:
        assert_valid_ents(doc)


# --- Training with empty docs; masked attention rows --------------------------------------

@pytest.mark.parametrize("crf", [False, True])
def test_empty_doc_in_training_batch_finite(crf):
    nlp = make_nlp(crf=crf, dropout=0.1, attention_dropout=0.1)
    examples = fixture_examples(nlp, limit=6)
    optimizer = nlp.initialize(lambda: examples)
    batch = [
        Example(nlp.make_doc(""), nlp.make_doc("")),
        examples[0],
        Example(nlp.make_doc("   "), nlp.make_doc("   ")),
        Example(Doc(nlp.vocab, words=[]), Doc(nlp.vocab, words=[])),
        examples[1],
    ]
    ner = nlp.get_pipe("vanilla_ner")
    # The softmax starts at zero, so nothing reaches the encoder on the first
    # step: take two steps first.
    for _ in range(2):
        nlp.update(examples, sgd=optimizer)
    # Gradients, by hand: finite everywhere, including the torch parameters.
    scores, backprop = ner.model.begin_update([eg.predicted for eg in batch])
    loss, d_scores = ner.get_loss(batch, scores)
    assert math.isfinite(loss) and loss > 0
    backprop(d_scores)
    module = encoder_module(ner.model)
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    for node in ner.model.walk():
        for name in node.param_names:
            if node.has_grad(name):
                assert numpy.isfinite(node.ops.to_numpy(node.get_grad(name))).all(), (node.name, name)
    ner.model.finish_update(optimizer)
    # And through nlp.update, only empty docs and mixed.
    for examples_batch in (batch, batch[:1] + batch[2:4]):
        losses = {}
        nlp.update(examples_batch, sgd=optimizer, losses=losses)
        assert math.isfinite(losses["vanilla_ner"])
    for p in module.parameters():
        assert torch.isfinite(p).all()


@pytest.mark.parametrize("positions", ["rotary", "sinusoidal", "learned", "none"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_fully_masked_window_is_finite(positions, norm_first):
    torch.manual_seed(0)
    config = EncoderConfig(width=16, depth=2, n_heads=2, ff_width=32, positions=positions,
                           norm_first=norm_first, max_length=8, dropout=0.1, attention_dropout=0.1)
    module = TransformerEncoderModule(config)
    X = torch.randn(3, 8, 16, requires_grad=True)
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[1] = False  # an all-padding window
    mask[2, 3:] = False
    for train_mode in (True, False):
        module.train(train_mode)
        Y = module(X, mask)
        assert torch.isfinite(Y).all()
        assert (Y[1] == 0).all() and (Y[2, 3:] == 0).all()
    Y.sum().backward()
    assert torch.isfinite(X.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


# --- Determinism ------------------------------------------------------------------------

def _train_seeded(seed):
    nlp = make_nlp(dropout=0.1, attention_dropout=0.1, seed=seed)
    examples = fixture_examples(nlp, limit=30)
    losses = train(nlp, examples, n_epochs=3, batch_size=8, seed=seed)
    return nlp, losses


def test_same_seed_twice_identical_on_cpu(dev_texts):
    nlp1, losses1 = _train_seeded(7)
    nlp2, losses2 = _train_seeded(7)
    assert losses1 == losses2
    assert nlp1.get_pipe("vanilla_ner").to_bytes() == nlp2.get_pipe("vanilla_ner").to_bytes()
    assert ents_of(list(nlp1.pipe(dev_texts))) == ents_of(list(nlp2.pipe(dev_texts)))
    nlp3, losses3 = _train_seeded(8)
    assert losses3 != losses1  # the seed matters (dropout, init)


# --- memory_zone --------------------------------------------------------------------------

def test_memory_zone(trained_nlp, dev_texts):
    expected = ents_of(list(trained_nlp.pipe(dev_texts)))
    n_strings = len(trained_nlp.vocab.strings)
    for _ in range(2):
        with trained_nlp.memory_zone():
            got = ents_of(list(trained_nlp.pipe(dev_texts + ["brandnewword" * 3, ""])))
        assert got[: len(dev_texts)] == expected
    assert len(trained_nlp.vocab.strings) <= n_strings + 1
    # Labels survive the zone.
    assert ents_of([trained_nlp(dev_texts[0])]) == expected[:1]


def test_heap_does_not_grow_with_varying_batch_shapes():
    """Batches of new shapes, as a stream of docs brings, must not leave freed
    memory stuck in glibc's heap (+57.6 MiB over these 300 batches when GELU
    ran through oneDNN's per-shape primitive cache: torch_modules.GELU)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    mallinfo2.restype = MallInfo2
    model = build_transformer_encoder_v1(width=32, depth=1, n_heads=2, ff_width=64, max_length=256)
    model.initialize()
    rng = numpy.random.default_rng(0)

    def stream(n_batches):
        for _ in range(n_batches):
            lengths = rng.integers(1, 257, size=rng.integers(1, 33))
            model.predict([rng.random((n, 32), dtype="float32") for n in lengths])

    stream(100)  # warm-up
    heap_before = mallinfo2().arena
    stream(300)
    growth_mib = (mallinfo2().arena - heap_before) / 2**20
    assert growth_mib < 16, f"malloc's heap grew by {growth_mib:.1f} MiB over 300 batches"


# --- GPU (skipped without CUDA) -----------------------------------------------------------

GPU_TRAIN_SCRIPT = """
import json, math, sys
sys.path.insert(0, sys.argv[3])
import spacy
spacy.require_gpu()
from reliability_helpers import fixture_examples, make_nlp, train
mixed = sys.argv[2] == "mixed"
nlp = make_nlp(mixed_precision=mixed)
examples = fixture_examples(nlp)
losses = train(nlp, examples, n_epochs=20)
texts = [eg.reference.text for eg in examples]
ents = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
scores = nlp.evaluate([spacy.training.Example(nlp.make_doc(eg.reference.text), eg.reference) for eg in examples])
nlp.to_disk(sys.argv[1])
print(json.dumps({"losses": losses, "ents": ents, "texts": texts, "f": scores["ents_f"]}))
"""

CPU_EVAL_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[2])
import spacy, torch
assert not torch.cuda.is_available()
from spacy.training import Example
from reliability_helpers import fixture_examples
nlp = spacy.load(sys.argv[1])
examples = fixture_examples(nlp)
texts = [eg.reference.text for eg in examples]
ents = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
scores = nlp.evaluate([Example(nlp.make_doc(eg.reference.text), eg.reference) for eg in examples])
devices = sorted({str(p.device) for node in nlp.get_pipe("vanilla_ner").model.walk()
                  for shim in node.shims for p in shim._model.parameters()})
print(json.dumps({"ents": ents, "f": scores["ents_f"], "devices": devices}))
"""


@pytest.mark.gpu
@requires_spacy_gpu
def test_train_on_gpu_load_on_cpu(tmp_path):
    tests_dir = str(Path(__file__).resolve().parent)
    gpu = run_script(GPU_TRAIN_SCRIPT, str(tmp_path / "model"), "fp32", tests_dir, timeout=600)
    assert all(math.isfinite(x) for x in gpu["losses"])
    cpu = run_script(CPU_EVAL_SCRIPT, str(tmp_path / "model"), tests_dir, env={"CUDA_VISIBLE_DEVICES": ""})
    assert cpu["devices"] == ["cpu"]
    assert cpu["ents"] == gpu["ents"]
    assert cpu["f"] == gpu["f"]  # dev F1 change after the GPU->CPU round trip: 0


@pytest.mark.gpu
@requires_spacy_gpu
def test_mixed_precision_training_finite(tmp_path):
    tests_dir = str(Path(__file__).resolve().parent)
    out = run_script(GPU_TRAIN_SCRIPT, str(tmp_path / "model"), "mixed", tests_dir, timeout=600)
    assert all(math.isfinite(x) for x in out["losses"])
    assert out["losses"][-1] < out["losses"][0]
    cpu = run_script(CPU_EVAL_SCRIPT, str(tmp_path / "model"), tests_dir, env={"CUDA_VISIBLE_DEVICES": ""})
    assert cpu["devices"] == ["cpu"] and cpu["f"] > 0


@pytest.mark.gpu
@requires_spacy_gpu
def test_same_seed_twice_on_gpu_within_tolerance(tmp_path):
    # CUDA scatter-adds (the backward of the window gather) are not
    # deterministic, so GPU runs agree within a tolerance, not bit for bit.
    tests_dir = str(Path(__file__).resolve().parent)
    runs = [run_script(GPU_TRAIN_SCRIPT, str(tmp_path / f"model{i}"), "fp32", tests_dir, timeout=600)
            for i in range(2)]
    for a, b in zip(runs[0]["losses"], runs[1]["losses"]):
        assert a == pytest.approx(b, rel=0.02)
    assert runs[0]["f"] == pytest.approx(runs[1]["f"], abs=0.02)


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_large_activations_and_masked_window_finite(dtype):
    from spacy_vanilla_ner.layers import WindowedEncoder

    torch.manual_seed(0)
    config = EncoderConfig(width=32, depth=2, n_heads=4, ff_width=64, max_length=16)
    encoder = WindowedEncoder(TransformerEncoderModule(config)).cuda()
    lengths = [0, 40, 3, 0, 16]
    X = (torch.randn(sum(lengths), 32, device="cuda") * 300).requires_grad_()  # large activations
    batch = build_window_batch(lengths, 16, 4, 48, X.device)
    assert all(g.device.type == "cuda" and m.device.type == "cuda" for g, m in batch.chunks)
    with torch.autocast(device_type="cuda", dtype=dtype):
        Y = encoder(X, batch=batch)
    assert Y.dtype == torch.float32 and torch.isfinite(Y).all()
    Y.pow(2).mean().backward()
    assert torch.isfinite(X.grad).all()
    # An all-padding window straight into the module, under autocast.
    module = encoder.encoder
    Xw = (torch.randn(2, 16, 32, device="cuda") * 300).requires_grad_()
    mask = torch.zeros(2, 16, dtype=torch.bool, device="cuda")
    mask[1, :5] = True
    with torch.autocast(device_type="cuda", dtype=dtype):
        Yw = module(Xw, mask)
    assert torch.isfinite(Yw).all() and (Yw[0] == 0).all()
    Yw.float().sum().backward()
    assert torch.isfinite(Xw.grad).all()


@pytest.mark.gpu
@requires_spacy_gpu
def test_long_docs_on_gpu(tmp_path):
    script = """
import json, sys
sys.path.insert(0, sys.argv[1])
import spacy
spacy.require_gpu()
from reliability_helpers import fixture_examples, make_nlp, train
nlp = make_nlp()
train(nlp, fixture_examples(nlp), n_epochs=3)
words = [eg.reference[i].text for eg in fixture_examples(nlp) for i in range(len(eg.reference))]
out = {}
for n in (511, 512, 513, 1024, 50000):
    doc = nlp(spacy.tokens.Doc(nlp.vocab, words=(words * (n // len(words) + 1))[:n]))
    out[n] = [len(doc), len(doc.ents)]
print(json.dumps(out))
"""
    out = run_script(script, str(Path(__file__).resolve().parent), timeout=600)
    assert {int(k): v[0] for k, v in out.items()} == {n: n for n in (511, 512, 513, 1024, 50000)}
