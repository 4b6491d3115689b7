"""The parameter counter (vanilla_ner_experiments/params.py): each value once."""

import torch
from spacy.util import load_config, load_model_from_config
from thinc.api import Linear, PyTorchWrapper_v2, chain

from tests.helpers import REPO, fixture_examples
from vanilla_ner_experiments.params import count_params


def test_torch_module_wrapped_twice_counts_once():
    module = torch.nn.Linear(4, 3)  # 15 parameters
    model = chain(PyTorchWrapper_v2(module), PyTorchWrapper_v2(module))
    assert count_params(model) == 15
    assert count_params(model, module) == 15


def test_shared_thinc_node_counts_once():
    layer = Linear(3, 4).initialize()  # 15 parameters
    assert count_params(chain(layer, layer)) == 15
    assert count_params(layer, chain(layer, Linear(3, 3).initialize())) == 15 + 12


def test_tied_and_frozen_torch_parameters():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 4, bias=False)
            self.b = torch.nn.Linear(4, 4, bias=False)
            self.b.weight = self.a.weight
            self.frozen = torch.nn.Linear(4, 4)
            self.frozen.requires_grad_(False)

    assert count_params(Tied()) == 16


def test_pipeline_listener_adds_nothing():
    """The tok2vec's parameters count once, though its listener sits in vanilla_ner's model."""
    overrides = {
        "components.tok2vec.model.encode.width": 32,
        "components.tok2vec.model.encode.n_heads": 2,
    }
    config = load_config(
        REPO / "configs" / "transformer_vner.cfg", overrides=overrides, interpolate=True
    )
    nlp = load_model_from_config(config, auto_fill=True)
    examples = fixture_examples(nlp, limit=5)
    nlp.initialize(lambda: examples)
    tok2vec = nlp.get_pipe("tok2vec").model
    ner = nlp.get_pipe("vanilla_ner").model
    total = count_params(nlp)
    assert total == count_params(tok2vec, ner) == count_params(tok2vec) + count_params(ner)
    encoder = [n for n in tok2vec.walk() if n.shims]
    torch_params = sum(p.numel() for n in encoder for s in n.shims for p in s._model.parameters())
    assert torch_params > 0 and total > torch_params
