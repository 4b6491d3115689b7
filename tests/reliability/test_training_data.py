"""Reliability: initialize() without labels or examples, bad gold (overlapping,
misaligned), untrained models, empty docs in a training batch, determinism."""

import math
import warnings

import numpy
import pytest
import torch
from spacy.tokens import Doc
from spacy.training import Example

from spacy_vanilla_ner.tagging.biluo import tag_names
from tests.helpers import encoder_module, ents_of, fixture_examples, make_nlp, train


def test_initialize_without_labels_or_examples():
    nlp = make_nlp()
    with pytest.raises(ValueError, match=r"vanilla_ner.*labels"):
        nlp.initialize()
    # Examples without any entities: the same.
    nlp = make_nlp()
    with pytest.raises(ValueError, match=r"vanilla_ner.*labels"):
        nlp.initialize(
            lambda: [Example(nlp.make_doc("no entities here"), nlp.make_doc("no entities here"))]
        )


@pytest.mark.parametrize(
    "get_examples",
    [None, lambda: None, lambda: [], [], "not callable"],
    ids=["None", "returns-None", "returns-empty", "list", "str"],
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
    ref = Doc(
        trained_nlp.vocab,
        words=["A", "New", "York", "er", "said"],
        spaces=[True, True, False, True, False],
        ents=["O", "B-LOC", "I-LOC", "O", "O"],
    )
    pred = Doc(
        trained_nlp.vocab, words=["A", "New", "Yorker", "said"], spaces=[True, True, True, False]
    )
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


def test_untrained_model_predicts_no_entities():
    nlp = make_nlp()
    # Not initialized at all: an error that says to call initialize() (as spaCy's E109).
    with pytest.raises(ValueError, match="initialize"):
        nlp("Angela Merkel visited Paris .")
    # Initialized, never updated (zero-initialized softmax: uniform, ties decode to O).
    nlp.get_pipe("vanilla_ner").add_label("PER")
    nlp.get_pipe("vanilla_ner").add_label("LOC")
    nlp.initialize()
    docs = list(nlp.pipe(["Angela Merkel visited Paris .", "", "x" * 5000, "London"]))
    assert all(doc.ents == () for doc in docs)


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
                assert numpy.isfinite(node.ops.to_numpy(node.get_grad(name))).all(), (
                    node.name,
                    name,
                )
    ner.model.finish_update(optimizer)
    # And through nlp.update, only empty docs and mixed.
    for examples_batch in (batch, batch[:1] + batch[2:4]):
        losses = {}
        nlp.update(examples_batch, sgd=optimizer, losses=losses)
        assert math.isfinite(losses["vanilla_ner"])
    for p in module.parameters():
        assert torch.isfinite(p).all()


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
