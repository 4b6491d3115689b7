"""Reliability of the default pipeline (`nlp.add_pipe("vanilla_ner")` as shipped: NormDropout,
TransformerEncoder.v2, CRF): pickle, processes started by fork and by spawn, threads sharing
one loaded pipeline, and no lambda or closure in any model the package builds."""

import inspect
import json
import pickle
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy
import pytest
import spacy
from spacy.util import registry

from tests.helpers import ents_of, run_script

ARCHITECTURES = [
    name for name in registry.architectures.get_all() if name.startswith("spacy-vanilla-ner.")
]


def test_default_pipeline_is_the_recipe(default_nlp):
    config = default_nlp.config["components"]["vanilla_ner"]
    assert config["crf"] is True
    tok2vec = config["model"]["tok2vec"]
    assert tok2vec["embed"]["@architectures"] == "spacy-vanilla-ner.NormDropout.v2"
    assert tok2vec["encode"]["@architectures"] == "spacy-vanilla-ner.TransformerEncoder.v2"
    assert tok2vec["encode"]["dropout"] > 0  # so that a leak of training mode would show


def test_pickle_round_trip(default_nlp, dev_texts):
    nlp2 = pickle.loads(pickle.dumps(default_nlp))
    expected = ents_of(list(default_nlp.pipe(dev_texts)))
    assert ents_of(list(nlp2.pipe(dev_texts))) == expected
    assert sum(len(e) for e in expected) > 10
    assert nlp2.get_pipe("vanilla_ner").to_bytes() == default_nlp.get_pipe("vanilla_ner").to_bytes()


MULTIPROCESS_SCRIPT = """
import json, multiprocessing, sys

def main():
    method, path, texts_path, dtype = sys.argv[1:5]
    multiprocessing.set_start_method(method, force=True)
    import spacy
    from spacy_vanilla_ner.models.quantization import INT8_LOAD_CONFIG
    config = INT8_LOAD_CONFIG if dtype == "int8" else {}
    nlp = spacy.load(path, config=config)
    texts = json.load(open(texts_path, encoding="utf8"))
    # Serial first, so torch's thread pools exist before a fork (spaCy #6662).
    serial = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
    parallel = [[(e.start_char, e.end_char, e.label_) for e in d.ents]
                for d in nlp.pipe(texts, n_process=2, batch_size=10)]
    print(json.dumps({"serial": serial, "parallel": parallel}))

if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize(
    "method,dtype", [("fork", "float32"), ("spawn", "float32"), ("spawn", "int8")]
)
def test_pipe_n_process_2_equals_serial(default_path, dev_texts, tmp_path, method, dtype):
    """Also with int8 inference (`spacy-vanilla-ner.Int8Inference.v1` at load time): the
    workers remake the int8 copy from the pickled weights."""
    texts = dev_texts[:40] + ["", "   ", "x" * 5000, "😀 Emma Watson in London"]
    texts_path = tmp_path / "texts.json"
    texts_path.write_text(json.dumps(texts), encoding="utf8")
    out = run_script(
        MULTIPROCESS_SCRIPT,
        method,
        str(default_path),
        str(texts_path),
        dtype,
        env={"OMP_NUM_THREADS": "2"},
        timeout=180,
    )
    assert out["parallel"] == out["serial"]
    assert sum(len(e) for e in out["serial"]) > 10


def test_four_threads_tag_as_serial_use(default_path, dev_texts):
    """A web app's thread pool shares one loaded pipeline: each thread must get exactly
    what serial use gives, scores included (dropout must never switch on for inference)."""
    nlp = spacy.load(default_path)
    pipe = nlp.get_pipe("vanilla_ner")
    batches = [dev_texts[i : i + 5] for i in range(0, len(dev_texts), 5)] * 3

    def run(texts):
        docs = [nlp.make_doc(t) for t in texts]
        scores = [pipe.model.ops.to_numpy(s) for s in pipe.model.predict(docs)]
        return ents_of(list(nlp.pipe(texts))), scores

    serial = [run(batch) for batch in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(run, batches))
    for (ents, scores), (t_ents, t_scores) in zip(serial, threaded):
        assert t_ents == ents
        for s, t in zip(scores, t_scores):
            numpy.testing.assert_allclose(t, s, rtol=0, atol=1e-5)
    assert sum(len(doc) for ents, _ in serial for doc in ents) > 10


def _where_defined(fn) -> str:
    while isinstance(fn, partial):
        fn = fn.func
    return getattr(fn, "__qualname__", repr(fn))


def _closures(model):
    """Names of the lambdas and nested functions a model holds (its forward and init
    functions and callable attrs, for every node)."""
    found = []
    for node in model.walk():
        held = [node._func, node.init] + [v for v in node.attrs.values() if callable(v)]
        for fn in held:
            if fn is not None and "<" in _where_defined(fn):  # <lambda>, <locals>
                found.append(f"{node.name}: {_where_defined(fn)}")
    return found


def test_no_closure_in_the_default_pipeline(default_nlp):
    model = default_nlp.get_pipe("vanilla_ner").model
    assert _closures(model) == []


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_no_closure_in_any_registered_model(name):
    nlp = spacy.blank("en")
    args = {
        "spacy-vanilla-ner.TransformerEncoder.v1": dict(width=16, depth=1, n_heads=2),
        "spacy-vanilla-ner.TransformerEncoder.v2": dict(width=16, depth=1, n_heads=2),
        "spacy-vanilla-ner.TransformerTok2Vec.v1": dict(width=16, depth=1, n_heads=2),
        "spacy-vanilla-ner.MultiHashEmbed.v1": dict(
            width=16, attrs=["NORM", "SHAPE"], rows=[100, 50], include_static_vectors=False
        ),
    }
    builder = registry.architectures.get(name)
    if name in args:
        model = builder(**args[name])
    else:  # the builders that wrap another model
        pipe = nlp.add_pipe("vanilla_ner")
        tok2vec = pipe.model.get_ref("tok2vec")
        params = inspect.signature(builder).parameters
        inner = tok2vec.get_ref("embed") if "embed" in params else tok2vec
        extra = {"rate": 0.1, "width": 16}
        model = builder(inner, **{k: v for k, v in extra.items() if k in params})
    assert _closures(model) == []
