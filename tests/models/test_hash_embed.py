"""`spacy-vanilla-ner.MultiHashEmbed.v1`: spaCy's `MultiHashEmbed.v2` with the Maxout and
LayerNorm computed by torch. The same outputs and gradients as spaCy's (ties in the Maxout
included), weights that load both ways, the layer under NormDropout.v2, and in a pipeline."""

import numpy
import pytest
import spacy
import torch
from spacy.ml.models.tok2vec import MultiHashEmbed
from thinc.api import Maxout, fix_random_seed

from spacy_vanilla_ner.models.embed import build_norm_dropout_v2
from spacy_vanilla_ner.models.hash_embed import (
    _layernorm_forward,
    _maxout_forward,
    build_multi_hash_embed,
    with_torch_mixing,
)

SETTINGS = dict(width=32, attrs=["NORM", "PREFIX", "SUFFIX", "SHAPE"], rows=[500, 100, 100, 100])
TEXTS = [
    "Ann Lee met the Anglo-Dutch firm Shell in Rotterdam on Monday .",
    "Hi",
    "",
    "The  U.N. said\n so .",
]


@pytest.fixture(scope="module")
def docs():
    nlp = spacy.blank("en")
    return [nlp(text) for text in TEXTS]


def spacy_and_ours(docs):
    """spaCy's MultiHashEmbed.v2 and ours, ours with spaCy's weights loaded from bytes."""
    fix_random_seed(0)
    theirs = MultiHashEmbed(include_static_vectors=False, **SETTINGS)
    theirs.initialize(X=docs)
    ours = build_multi_hash_embed(include_static_vectors=False, **SETTINGS)
    ours.initialize(X=docs)
    ours.from_bytes(theirs.to_bytes())
    return theirs, ours


def grads(model):
    return {
        (i, name): model.ops.to_numpy(node.get_grad(name)).copy()
        for i, node in enumerate(model.walk())
        for name in node.param_names
        if node.has_grad(name)
    }


def test_same_tree_and_weights_as_spacys(docs):
    theirs, ours = spacy_and_ours(docs)
    assert [n.name for n in ours.walk()] == [n.name for n in theirs.walk()]
    swapped = [n.name for n in ours.walk() if n._func in (_maxout_forward, _layernorm_forward)]
    assert sorted(swapped) == ["layernorm", "maxout"]
    # Weights saved by ours load into spaCy's layer, and back.
    fix_random_seed(1)
    other = MultiHashEmbed(include_static_vectors=False, **SETTINGS)
    other.initialize(X=docs)
    other.from_bytes(ours.to_bytes())
    for a, b in zip(other.walk(), ours.walk()):
        for name in a.param_names:
            if a.has_param(name):
                numpy.testing.assert_array_equal(a.get_param(name), b.get_param(name))


@pytest.mark.parametrize("threads", [1, 2])
def test_outputs_and_gradients_match_spacys(docs, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        theirs, ours = spacy_and_ours(docs)
        Y_theirs, back_theirs = theirs.begin_update(docs)
        Y_ours, back_ours = ours.begin_update(docs)
        assert [y.shape for y in Y_ours] == [y.shape for y in Y_theirs]
        assert all(y.dtype == numpy.float32 for y in Y_ours)
        for a, b in zip(Y_theirs, Y_ours):
            numpy.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
        rng = numpy.random.default_rng(0)
        dY = [rng.normal(size=y.shape).astype("float32") for y in Y_theirs]
        back_theirs([d.copy() for d in dY])
        back_ours([d.copy() for d in dY])
        g_theirs, g_ours = grads(theirs), grads(ours)
        assert g_ours.keys() == g_theirs.keys() and len(g_ours) >= 6  # 4 tables, W, b, G, b
        for key in g_theirs:
            scale = numpy.abs(g_theirs[key]).max() + 1e-6
            numpy.testing.assert_allclose(g_ours[key], g_theirs[key], atol=1e-4 * scale, rtol=0)
    finally:
        torch.set_num_threads(before)


def test_maxout_ties_go_to_the_first_piece():
    """With all pieces equal (zero inputs, zero bias), thinc's maxout takes the first piece, and
    so gives it the whole gradient; ours does the same."""
    theirs = Maxout(4, 6, nP=3)
    X = numpy.zeros((5, 6), dtype="float32")
    X[0] = 1.0  # one row without ties
    theirs.initialize(X=X)
    theirs.set_param("b", numpy.zeros((4, 3), dtype="float32"))
    ours = Maxout(4, 6, nP=3)
    ours.initialize(X=X)
    ours.from_bytes(theirs.to_bytes())
    with_torch_mixing(ours)
    dY = numpy.arange(20, dtype="float32").reshape(5, 4)
    dY[0] = 0.0  # only the tied rows have a gradient: all of it goes to the first piece
    for model in (theirs, ours):
        Y, backprop = model.begin_update(X)
        backprop(dY.copy())
    numpy.testing.assert_allclose(ours.get_grad("b"), theirs.get_grad("b"), atol=1e-5)
    numpy.testing.assert_allclose(ours.get_grad("W"), theirs.get_grad("W"), atol=1e-5)
    assert numpy.abs(theirs.get_grad("b")[:, 1:]).sum() == 0 < theirs.get_grad("b")[:, 0].sum()


def test_with_torch_mixing_needs_a_mixing_layer():
    from thinc.api import Relu

    with pytest.raises(ValueError, match="no thinc Maxout or LayerNorm"):
        with_torch_mixing(Relu(4, 4))


def test_under_norm_dropout_and_in_a_pipeline(docs):
    """NormDropout.v2 finds the FeatureExtractor inside it; a pipeline with it in the embed slot
    trains, and loads from disk with the torch forward passes back in place."""
    embed = build_norm_dropout_v2(
        build_multi_hash_embed(include_static_vectors=False, **SETTINGS), 0.1
    )
    assert any(n.name == "norm_dropout" for n in embed.walk())
    nlp = spacy.blank("en")
    config = {
        "model": {
            "@architectures": "spacy.Tok2Vec.v2",
            "embed": {
                "@architectures": "spacy-vanilla-ner.MultiHashEmbed.v1",
                "include_static_vectors": False,
                **SETTINGS,
            },
            "encode": {
                "@architectures": "spacy.MaxoutWindowEncoder.v2",
                "width": 32,
                "depth": 1,
                "window_size": 1,
                "maxout_pieces": 3,
            },
        }
    }
    nlp.add_pipe("tok2vec", config=config)
    nlp.initialize()
    tok2vec = nlp.get_pipe("tok2vec")
    assert any(n._func is _maxout_forward for n in tok2vec.model.walk())
    doc = nlp("Ann Lee met Shell in Rotterdam .")
    from spacy.util import make_tempdir

    with make_tempdir() as tmp:
        nlp.to_disk(tmp)
        loaded = spacy.load(tmp)
    again = loaded("Ann Lee met Shell in Rotterdam .")
    numpy.testing.assert_allclose(again.tensor, doc.tensor, rtol=1e-5, atol=1e-6)
    assert any(n._func is _maxout_forward for n in loaded.get_pipe("tok2vec").model.walk())


def test_building_it_registers_the_fork_hook(monkeypatch):
    """Without our encoder in the pipeline (e.g. spaCy's CNN over this layer), the layer's
    torch ops still need forked workers (`nlp.pipe(n_process=2)`) to run on one thread."""
    from spacy_vanilla_ner.models import windowing

    registered = []
    monkeypatch.setattr(windowing.os, "register_at_fork", lambda **kw: registered.append(kw))
    monkeypatch.setattr(windowing, "_fork_hook_registered", False)
    build_multi_hash_embed(include_static_vectors=False, **SETTINGS)
    assert registered == [{"after_in_child": windowing._one_thread_after_fork}]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and cupy")
def test_on_gpu_matches_spacys(docs):
    """On cupy arrays (spaCy on a GPU): the torch passes read and write them through DLPack,
    on the device, and agree with spaCy's layer."""
    pytest.importorskip("cupy")
    from thinc.api import use_ops

    with use_ops("cupy"):
        theirs, ours = spacy_and_ours(docs)
        Y_theirs, back_theirs = theirs.begin_update(docs)
        Y_ours, back_ours = ours.begin_update(docs)
        assert all(type(y).__module__.startswith("cupy") for y in Y_ours)
        for a, b in zip(Y_theirs, Y_ours):
            numpy.testing.assert_allclose(b.get(), a.get(), rtol=1e-4, atol=1e-5)
        dY = [y.copy() for y in Y_theirs]
        back_theirs([d.copy() for d in dY])
        back_ours([d.copy() for d in dY])
        g_theirs, g_ours = grads(theirs), grads(ours)
        for key in g_theirs:
            scale = numpy.abs(g_theirs[key]).max() + 1e-6
            numpy.testing.assert_allclose(g_ours[key], g_theirs[key], atol=1e-4 * scale, rtol=0)
