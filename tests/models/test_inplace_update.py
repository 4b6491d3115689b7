"""The encoder's shim (`InPlaceUpdateShim`): one fused optimizer call per update over flat
buffers, with thinc's per-tensor gradient clipping and L2 kept, the same training as thinc's
`PyTorchShim` up to float rounding, and without the chain of tensors that thinc's
`param.data = ...` links at every update on CPU."""

import copy
import gc
import pickle

import numpy
import pytest
import spacy
import torch
from spacy.util import fix_random_seed
from thinc.api import Adam, NumpyOps, PyTorchShim

from spacy_vanilla_ner.models.encoder import InPlaceUpdateShim, _clip_per_tensor
from tests.helpers import fixture_examples


def n_tensors() -> int:
    gc.collect()
    return sum(type(o) in (torch.Tensor, torch.nn.Parameter) for o in gc.get_objects())


def encoder_shim(ner):
    shims = [s for node in ner.model.walk() for s in node.shims]
    assert [type(s) for s in shims] == [InPlaceUpdateShim]
    return shims[0]


def initialized_default():
    """The default pipeline, initialized on 5 fixture sentences; its encoder's shim."""
    fix_random_seed(0)
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("vanilla_ner")
    examples = fixture_examples(nlp, limit=5)
    nlp.initialize(lambda: examples)
    return nlp, ner, examples, encoder_shim(ner)


# The two shims' updates differ by float rounding (about 1e-7 after 6 updates). A near tie of
# two Maxout pieces can turn such a difference into a different winner and the runs then part
# by 1e-5: a discrete event of one trajectory, not of the update rule. With seed 0 and the
# default's embedding, one happens at update 4; seeds 1 to 3 have none.
TRAIN_SEED = 1


def train_default(n_updates: int, thinc_shim: bool):
    fix_random_seed(TRAIN_SEED)
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("vanilla_ner")
    shim = encoder_shim(ner)
    if thinc_shim:
        shim.__class__ = PyTorchShim  # thinc's own finish_update: per tensor
    examples = fixture_examples(nlp, limit=20)
    optimizer = nlp.initialize(lambda: examples)
    counts = []
    for _ in range(n_updates):
        nlp.update(examples, sgd=optimizer)
        counts.append(n_tensors())
    return nlp, shim, counts, examples


def test_training_equals_thincs_shim_without_the_chain():
    nlp, shim, counts, examples = train_default(6, thinc_shim=False)
    thinc_nlp, thinc_shim, thinc_counts, _ = train_default(6, thinc_shim=True)
    ours, theirs = shim._model.state_dict(), thinc_shim._model.state_dict()
    for name in ours:
        numpy.testing.assert_allclose(
            ours[name].numpy(), theirs[name].numpy(), rtol=1e-4, atol=1e-6, err_msg=name
        )
    texts = [eg.reference.text for eg in examples]
    assert [d.to_json()["ents"] for d in nlp.pipe(texts)] == [
        d.to_json()["ents"] for d in thinc_nlp.pipe(texts)
    ]
    n_params = len(ours)
    # thinc's shim keeps one more tensor per parameter and update; ours none.
    assert thinc_counts[-1] - thinc_counts[1] >= 4 * n_params
    assert counts[-1] - counts[1] <= 2


@pytest.mark.parametrize("decay", [True, False])
def test_one_step_equals_the_per_tensor_step_with_clipping_and_l2(decay):
    """Gradients large enough that some tensors are clipped and others not."""
    nlp, ner, examples, shim = initialized_default()
    twin = copy.deepcopy(shim)
    twin.__class__ = PyTorchShim
    torch.manual_seed(0)
    for a, b in zip(shim._model.parameters(), twin._model.parameters()):
        a.grad = torch.randn_like(a) * (0.01 if a.dim() == 1 else 0.005)
        b.grad = a.grad.clone()
    norms = [float(p.grad.norm()) for p in shim._model.parameters()]
    assert min(norms) < 0.5 < max(norms)
    settings = dict(learn_rate=0.01, L2=0.01, L2_is_weight_decay=decay, grad_clip=0.5)
    shim.finish_update(Adam(**settings, use_averages=True))
    twin.finish_update(Adam(**settings, use_averages=True))
    for a, b in zip(shim._model.parameters(), twin._model.parameters()):
        numpy.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-7)
        assert not a.grad.any()


def test_clip_per_tensor_is_thincs_clip_gradient():
    rng = numpy.random.default_rng(0)
    parts = [rng.normal(size=n).astype("float32") * s for n, s in [(5, 1), (7, 0.01), (3, 3)]]
    flat = torch.from_numpy(numpy.concatenate(parts))
    _clip_per_tensor(list(flat.split([5, 7, 3])), 1.0)  # views: clipped in place
    want = numpy.concatenate([NumpyOps().clip_gradient(p.copy(), 1.0) for p in parts])
    numpy.testing.assert_allclose(flat.numpy(), want, rtol=1e-6)


def test_buffers_are_remade_after_a_copy_and_not_pickled():
    nlp, shim, _, examples = train_default(2, thinc_shim=False)
    assert shim._flat is not None
    assert "_flat" not in pickle.loads(pickle.dumps(shim)).__dict__
    copied = nlp.get_pipe("vanilla_ner").model.copy()
    copy_shim = encoder_shim(type("P", (), {"model": copied})())
    assert "_flat" not in copy_shim.__dict__
    # The copy trains: its buffers are made from its own parameters.
    params = list(copy_shim._model.parameters())
    for p in params:
        p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in params]
    copy_shim.finish_update(Adam(learn_rate=0.1))
    assert all(not torch.equal(a, b) for a, b in zip(params, before))
    assert copy_shim._flat[0].data_ptr() != shim._flat[0].data_ptr()


def test_the_flat_buffers_are_made_once():
    nlp, shim, _, examples = train_default(2, thinc_shim=False)
    flat, flat_grad = shim._flat
    optimizer = Adam(learn_rate=0.001)
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    assert shim._flat[0] is flat and shim._flat[1] is flat_grad


def test_an_optimizer_that_returns_new_arrays_is_copied_in():
    """A callable that is not thinc's `Optimizer` gets per-tensor calls."""
    nlp, ner, examples, shim = initialized_default()
    before = {k: v.clone() for k, v in shim._model.state_dict().items()}

    def sgd(key, param, grad):  # not in place
        return param - 0.1 * grad, grad

    ner.update(examples, sgd=None)
    grads = {n: p.grad.clone() for n, p in shim._model.named_parameters()}
    shim.finish_update(sgd)
    for name, param in shim._model.named_parameters():
        numpy.testing.assert_allclose(
            param.detach().numpy(), (before[name] - 0.1 * grads[name]).numpy(), rtol=1e-6
        )
        assert not param.grad.any()


def test_the_optimizers_averages_reach_the_encoder():
    """spaCy evaluates and saves under `nlp.use_params(optimizer.averages)`: the encoder's
    weights must be the averages there and its own weights again after."""
    nlp, shim, _, examples = train_default(3, thinc_shim=False)
    optimizer = Adam(learn_rate=0.001, use_averages=True)  # the recipe's setting
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    params = list(shim._model.parameters())
    current = [p.detach().clone() for p in params]
    average = torch.from_numpy(optimizer.averages[(shim.id, "flat")].copy())
    texts = [eg.reference.text for eg in examples]
    scores = nlp.get_pipe("vanilla_ner").model.predict([nlp.make_doc(t) for t in texts])
    with nlp.use_params(optimizer.averages):
        inside = torch.cat([p.detach().reshape(-1) for p in params])
        averaged = nlp.get_pipe("vanilla_ner").model.predict([nlp.make_doc(t) for t in texts])
    assert torch.equal(inside, average) and not torch.equal(inside, torch.cat(
        [c.reshape(-1) for c in current]))  # fmt: skip
    assert all(torch.equal(p, c) for p, c in zip(params, current))
    assert any(not numpy.array_equal(a, b) for a, b in zip(scores, averaged))


def test_thincs_shim_never_applied_the_averages():
    """Why the encoder's shim has its own `use_params`: thinc's looks for keys that its
    `finish_update` does not write, so the encoder kept its current weights."""
    nlp, shim, _, examples = train_default(3, thinc_shim=True)
    optimizer = Adam(learn_rate=0.001, use_averages=True)
    nlp.update(examples, sgd=optimizer)
    before = [p.detach().clone() for p in shim._model.parameters()]
    assert any(key[0] == shim.id for key in optimizer.averages)
    with nlp.use_params(optimizer.averages):
        assert all(torch.equal(p, b) for p, b in zip(shim._model.parameters(), before))
