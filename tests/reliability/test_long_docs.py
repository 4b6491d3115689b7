"""Reliability: long docs in a pipeline, memory bounded by the window, entities
near window edges, and window settings taken from the config on load."""

import functools

import pytest

from spacy_vanilla_ner.models.windowing import plan_windows
from tests.helpers import assert_valid_ents, make_nlp, record_windows, words_doc


@pytest.mark.parametrize("n_tokens", [511, 512, 513, 1024, 1537])
def test_long_docs(trained_nlp, n_tokens):
    doc = trained_nlp(words_doc(trained_nlp.vocab, n_tokens))
    assert len(doc) == n_tokens
    assert_valid_ents(doc)


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


def _reload_with_window(trained_nlp, max_length, overlap):
    """The trained weights in a pipeline windowing at `max_length`."""
    nlp = make_nlp(max_length=max_length, window_overlap=overlap)
    # The window settings come from the config, not from the saved model (see
    # test_window_settings_from_config_apply_on_load), so loading is enough.
    nlp.get_pipe("vanilla_ner").from_bytes(trained_nlp.get_pipe("vanilla_ner").to_bytes())
    return nlp


def _near_cuts(ents, cuts):
    """The entities that start within 8 tokens of a window edge."""
    return {e for e in ents if min(abs(e[0] - c) for c in cuts) < 8}


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
        near = functools.partial(_near_cuts, cuts=cuts)
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
