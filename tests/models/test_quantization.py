"""int8 inference (`set_inference_dtype`, the `spacy-vanilla-ner.Int8Inference.v1` callback) on
the default pipeline: it predicts close to float32 with the current weights (after updates,
under the optimizer's averages, after loading), it leaves training and the saved pipeline as
they are, it survives pickling and threads, and bad settings are named."""

import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy
import pytest
import spacy
import torch

from spacy_vanilla_ner import set_inference_dtype
from spacy_vanilla_ner.models.quantization import INT8_LOAD_CONFIG
from spacy_vanilla_ner.models.windowing import WindowedEncoder
from tests.helpers import ents_of, fixture_examples


def encoders(nlp):
    return [
        shim._model
        for node in nlp.get_pipe("vanilla_ner").model.walk()
        for shim in node.shims
        if isinstance(shim._model, WindowedEncoder)
    ]


def scores(nlp, texts):
    pipe = nlp.get_pipe("vanilla_ner")
    docs = [nlp.make_doc(t) for t in texts]
    return numpy.concatenate([pipe.model.ops.to_numpy(s) for s in pipe.model.predict(docs)])


def agreement(a, b) -> float:
    """Share of tokens whose best tag is the same."""
    return float((a.argmax(axis=1) == b.argmax(axis=1)).mean())


@pytest.fixture
def loaded(default_path):
    return spacy.load(default_path)


def test_load_time_config_sets_every_encoder(default_path):
    nlp = spacy.load(default_path, config=INT8_LOAD_CONFIG)
    assert [e.inference_dtype for e in encoders(nlp)] == ["int8"]
    assert [e.inference_dtype for e in encoders(spacy.load(default_path))] == ["float32"]


def test_int8_predicts_close_to_float32(loaded, dev_texts):
    want = scores(loaded, dev_texts)
    assert set_inference_dtype(loaded, "int8") == 1
    got = scores(loaded, dev_texts)
    assert not numpy.array_equal(got, want)  # it is another computation
    assert agreement(got, want) > 0.97
    set_inference_dtype(loaded, "float32")
    numpy.testing.assert_array_equal(scores(loaded, dev_texts), want)


def test_int8_follows_updates_and_loaded_weights(loaded, default_nlp, dev_texts):
    set_inference_dtype(loaded, "int8")
    before = scores(loaded, dev_texts)  # builds the int8 copy
    examples = fixture_examples(loaded, limit=30)
    optimizer = loaded.resume_training()
    for _ in range(3):
        loaded.update(examples, sgd=optimizer)  # thinc's optimizer: in place, via numpy
    after = scores(loaded, dev_texts)
    set_inference_dtype(loaded, "float32")
    reference = scores(loaded, dev_texts)
    # The int8 copy was remade from the updated weights.
    assert numpy.abs(after - reference).mean() < numpy.abs(before - reference).mean() / 2
    # Weights loaded into the same modules (load_state_dict): the first pipeline's again.
    set_inference_dtype(loaded, "int8")
    loaded.get_pipe("vanilla_ner").from_bytes(default_nlp.get_pipe("vanilla_ner").to_bytes())
    numpy.testing.assert_array_equal(scores(loaded, dev_texts), before)


def test_int8_copy_is_remade_after_every_update_and_kept_otherwise(loaded, dev_texts):
    """thinc's optimizer changes the weights in place through numpy, which torch's version
    counters do not see: the encoder's shim marks them changed, so each update remakes the
    copy, and predictions without an update reuse it."""
    set_inference_dtype(loaded, "int8")
    (module,) = encoders(loaded)
    examples = fixture_examples(loaded, limit=10)
    optimizer = loaded.resume_training()
    copies = []
    for _ in range(3):
        loaded.update(examples, sgd=optimizer)
        scores(loaded, dev_texts[:2])
        copies.append(module._int8._copy)
    assert copies[0] is not copies[1] and copies[1] is not copies[2]
    scores(loaded, dev_texts[:2])
    assert module._int8._copy is copies[2]


def test_training_and_the_saved_pipeline_are_unchanged(default_path, tmp_path):
    plain, int8 = spacy.load(default_path), spacy.load(default_path, config=INT8_LOAD_CONFIG)
    assert int8.get_pipe("vanilla_ner").to_bytes() == plain.get_pipe("vanilla_ner").to_bytes()
    for nlp in (plain, int8):
        examples = fixture_examples(nlp, limit=20)
        optimizer = nlp.resume_training()
        torch.manual_seed(0)
        spacy.util.fix_random_seed(0)
        nlp.update(examples, sgd=optimizer, drop=0.0)
    assert int8.get_pipe("vanilla_ner").to_bytes() == plain.get_pipe("vanilla_ner").to_bytes()


def test_pickle_keeps_int8(default_path, dev_texts):
    nlp = spacy.load(default_path, config=INT8_LOAD_CONFIG)
    expected = ents_of(list(nlp.pipe(dev_texts)))
    copy = pickle.loads(pickle.dumps(nlp))
    assert [e.inference_dtype for e in encoders(copy)] == ["int8"]
    assert ents_of(list(copy.pipe(dev_texts))) == expected


def test_four_threads_tag_as_serial_use(default_path, dev_texts):
    nlp = spacy.load(default_path, config=INT8_LOAD_CONFIG)
    batches = [dev_texts[i : i + 5] for i in range(0, len(dev_texts), 5)] * 2
    serial = [scores(nlp, b) for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda b: scores(nlp, b), batches))
    for s, t in zip(serial, threaded):
        numpy.testing.assert_allclose(t, s, rtol=0, atol=1e-5)


def test_bad_settings_are_named(loaded):
    with pytest.raises(ValueError, match="inference dtype must be one of"):
        set_inference_dtype(loaded, "fp16")
    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    with pytest.raises(ValueError, match="has no spacy-vanilla-ner TransformerEncoder"):
        set_inference_dtype(nlp, "int8")
