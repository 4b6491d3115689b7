"""`spacy-vanilla-ner.MentionReplace.v1` and `spacy-vanilla-ner.ShuffledCorpus.v1`: mentions are
replaced by others of the same label with every token annotation kept consistent, nothing else
changes, unsupported examples pass through, and with `max_epochs = -1` spaCy's training loop
draws anew at every pass."""

import random

import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example
from spacy.training.loop import create_train_batches
from spacy.util import registry

from spacy_vanilla_ner.augment import create_mention_replace_augmenter, create_shuffled_corpus

WORDS_1 = ["John", "Smith", "lives", "in", "New", "York", "."]
ENTS_1 = ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"]
WORDS_2 = ["Mary", "visited", "Paris", "today", "."]
ENTS_2 = ["B-PER", "O", "B-LOC", "O", "O"]


@pytest.fixture
def nlp():
    return spacy.blank("en")


def example(nlp, words, ents, **kwargs):
    reference = Doc(nlp.vocab, words=words, ents=ents, **kwargs)
    return Example(Doc(nlp.vocab, words=words), reference)


def run(augmenter, nlp, examples):
    return [out for eg in examples for out in augmenter(nlp, eg)]


def spans(doc):
    return [(e.text, e.label_) for e in doc.ents]


def test_rate_one_replaces_every_mention_with_a_mention_read_before(nlp):
    random.seed(0)
    augment = create_mention_replace_augmenter(rate=1.0)
    first, second = run(
        augment,
        nlp,
        [
            example(nlp, WORDS_1, ENTS_1, sent_starts=[True] + [False] * 6),
            example(nlp, WORDS_2, ENTS_2, sent_starts=[True] + [False] * 4),
        ],
    )
    # Nothing was read before the first example: it passes unchanged.
    assert [t.text for t in first.reference] == WORDS_1
    ref = second.reference
    assert ref.text == "John Smith visited New York today . "
    assert spans(ref) == [("John Smith", "PER"), ("New York", "LOC")]
    assert [t.is_sent_start for t in ref] == [True] + [False] * 6
    # The predicted doc has the same (new) tokens and no annotation.
    assert [t.text for t in second.predicted] == [t.text for t in ref]
    assert not second.predicted.has_annotation("ENT_IOB")


def test_rate_zero_and_examples_without_entities_pass_unchanged(nlp):
    augment = create_mention_replace_augmenter(rate=0.0)
    examples = [example(nlp, WORDS_1, ENTS_1), example(nlp, WORDS_2, ENTS_2)] * 3
    assert all(a is b for a, b in zip(run(augment, nlp, examples), examples))
    augment = create_mention_replace_augmenter(rate=1.0)
    plain = example(nlp, ["no", "names", "here"], ["O", "O", "O"])
    assert run(augment, nlp, [plain]) == [plain]


def test_labels_restrict_what_is_replaced(nlp):
    random.seed(0)
    augment = create_mention_replace_augmenter(rate=1.0, labels=["LOC"])
    _, out = run(augment, nlp, [example(nlp, WORDS_1, ENTS_1), example(nlp, WORDS_2, ENTS_2)])
    assert spans(out.reference) == [("Mary", "PER"), ("New York", "LOC")]


def test_token_annotations_and_missing_labels_move_with_their_tokens(nlp):
    random.seed(0)
    augment = create_mention_replace_augmenter(rate=1.0)
    tags_1 = ["NNP", "NNP", "VBZ", "IN", "NNP", "NNP", "."]
    source = example(nlp, WORDS_1, ENTS_1, tags=tags_1, lemmas=[w.lower() for w in WORDS_1])
    # "today" has no NER annotation (missing, not O): it must stay missing.
    target = example(
        nlp,
        WORDS_2,
        ["B-PER", "O", "B-LOC", None, "O"],
        tags=["NNP", "VBD", "NNP", "NN", "."],
        lemmas=[w.lower() for w in WORDS_2],
    )
    target.reference.cats = {"TRAVEL": 1.0}
    _, out = run(augment, nlp, [source, target])
    ref = out.reference
    assert [t.text for t in ref] == ["John", "Smith", "visited", "New", "York", "today", "."]
    assert [t.tag_ for t in ref] == ["NNP", "NNP", "VBD", "NNP", "NNP", "NN", "."]
    assert [t.lemma_ for t in ref] == [t.text.lower() for t in ref]
    assert [t.ent_iob_ for t in ref] == ["B", "I", "O", "B", "I", "", "O"]
    assert ref.cats == {"TRAVEL": 1.0}


def test_whitespace_around_a_mention_is_the_context_s(nlp):
    random.seed(0)
    augment = create_mention_replace_augmenter(rate=1.0)
    source = example(nlp, ["Visit", "New", "York", "now"], ["O", "B-LOC", "I-LOC", "O"])
    target = Example(
        nlp.make_doc("In Paris, rain."),
        Doc(
            nlp.vocab,
            words=["In", "Paris", ",", "rain", "."],
            spaces=[True, False, True, False, False],
            ents=["O", "B-LOC", "O", "O", "O"],
        ),
    )
    _, out = run(augment, nlp, [source, target])
    assert out.reference.text == "In New York, rain."
    assert out.predicted.text == "In New York, rain."


def test_retokenized_predicted_docs_come_from_the_tokenizer(nlp):
    """Where the predicted doc's tokens differ from the gold ones, the new predicted doc is
    the tokenizer's, as spaCy's Corpus makes it (the Example aligns the two)."""
    random.seed(0)
    augment = create_mention_replace_augmenter(rate=1.0)
    source = example(nlp, ["Go", "to", "U.K.", "now"], ["O", "O", "B-LOC", "O"])
    reference = Doc(nlp.vocab, words=["I", "like", "Rome's", "food"], ents=["O", "O", "B-LOC", "O"])
    target = Example(nlp.make_doc("I like Rome's food"), reference)
    assert len(target.predicted) != len(target.reference)
    _, out = run(augment, nlp, [source, target])
    assert out.reference.text == "I like U.K. food "
    assert [t.text for t in out.predicted] == [t.text for t in nlp.make_doc(out.reference.text)]
    assert spans(out.reference) == [("U.K.", "LOC")]


def test_parsed_examples_pass_unchanged_with_one_warning(nlp):
    random.seed(0)
    augment = create_mention_replace_augmenter(rate=1.0)
    parsed = [
        Example(
            Doc(nlp.vocab, words=WORDS_2),
            Doc(nlp.vocab, words=WORDS_2, ents=ENTS_2, heads=[1, 1, 1, 1, 1], deps=["dep"] * 5),
        )
    ]
    with pytest.warns(UserWarning, match="dependency parse or span groups"):
        out = run(augment, nlp, [example(nlp, WORDS_1, ENTS_1)] + parsed * 2)
    assert out[1] is parsed[0] and out[2] is parsed[0]
    with_spans = example(nlp, WORDS_2, ENTS_2)
    with_spans.reference.spans["sc"] = [Span(with_spans.reference, 0, 1, "X")]
    assert run(augment, nlp, [with_spans]) == [with_spans]  # warned once already


def test_pool_is_bounded(nlp):
    random.seed(0)
    augment = create_mention_replace_augmenter(rate=0.0, pool_size=3)
    words = [f"Name{i}" for i in range(10)]
    run(augment, nlp, [example(nlp, [w, "said"], ["B-PER", "O"]) for w in words])
    assert len(augment.pool["PER"]) == 3 and augment.seen["PER"] == 10
    assert {m[0][0] for m in augment.pool["PER"]} <= set(words)


@pytest.mark.parametrize("kwargs", [{"rate": 1.5}, {"rate": -0.1}, {"pool_size": 0}])
def test_bad_settings_name_the_setting(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        create_mention_replace_augmenter(**kwargs)


@pytest.fixture
def docbin_path(nlp, tmp_path):
    docs = [
        Doc(
            nlp.vocab,
            words=[f"Name{i}", "met", f"Other{i}", "."],
            ents=["B-PER", "O", "B-PER", "O"],
        )
        for i in range(20)
    ]
    path = tmp_path / "train.spacy"
    DocBin(docs=docs).to_disk(path)
    return path


def test_shuffled_corpus_reads_every_doc_in_a_new_order(nlp, docbin_path):
    random.seed(0)
    corpus = registry.readers.get("spacy-vanilla-ner.ShuffledCorpus.v1")(docbin_path)
    first = [eg.reference.text for eg in corpus(nlp)]
    second = [eg.reference.text for eg in corpus(nlp)]
    assert sorted(first) == sorted(second) and len(first) == 20
    assert first != second
    with pytest.raises(ValueError, match="path is null"):
        create_shuffled_corpus(None)


def test_streaming_training_draws_anew_every_pass(nlp, docbin_path):
    """spaCy's loop with max_epochs = -1 reads the corpus for every pass, so the augmenter's
    choices differ between passes (with max_epochs >= 0 they would be frozen)."""
    random.seed(0)
    augment = create_mention_replace_augmenter(rate=0.5)
    corpus = create_shuffled_corpus(docbin_path, augmenter=augment)

    def batcher(examples):
        yield list(examples)

    passes = {}
    for epoch, batch in create_train_batches(nlp, corpus, batcher, -1):
        passes[epoch] = sorted(eg.reference.text for eg in batch)
        if epoch == 2:
            break
    assert len(passes[1]) == len(passes[2]) == 20
    assert passes[1] != passes[2]
    originals = {f"Name{i} met Other{i} . " for i in range(20)}
    assert not set(passes[2]) <= originals  # some mentions were replaced
