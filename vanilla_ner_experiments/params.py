"""The one parameter counter of the experiments.

Counts every trainable value once: thinc parameters by (node id, name), over every node of
every pipe's model (`Model.walk`), and torch parameters by identity, over the torch modules
that thinc shims wrap and any plain torch module given. So a node or torch module reached
from two places (a shared tok2vec and its listeners, one module wrapped twice, tied weights)
counts once, and listeners, which hold no parameters, add nothing.
"""

from typing import Any, Iterable, Set, Tuple

import torch


class ParamCounter:
    """Accumulates parameter counts, de-duplicated across everything added."""

    def __init__(self) -> None:
        self.total = 0
        self._thinc: Set[Tuple[int, str]] = set()
        self._torch: Set[int] = set()

    def add_torch(self, module: torch.nn.Module) -> "ParamCounter":
        for param in module.parameters():
            if param.requires_grad and id(param) not in self._torch:
                self._torch.add(id(param))
                self.total += param.numel()
        return self

    def add_thinc(self, model: Any) -> "ParamCounter":
        for node in model.walk():
            for name in node.param_names:
                if node.has_param(name) and (node.id, name) not in self._thinc:
                    self._thinc.add((node.id, name))
                    self.total += int(node.get_param(name).size)
            for shim in node.shims:
                module = getattr(shim, "_model", None)
                if isinstance(module, torch.nn.Module):
                    self.add_torch(module)
        return self


def count_params(*models: Any) -> int:
    """Trainable parameters of spaCy pipelines, thinc models and torch modules, each once.

    models: `Language` objects (every pipe's model), thinc `Model`s or `torch.nn.Module`s.
    RETURNS (int): the number of trainable values.
    """
    counter = ParamCounter()
    for model in models:
        if isinstance(model, torch.nn.Module):
            counter.add_torch(model)
        elif hasattr(model, "pipeline"):
            for thinc_model in _pipe_models(model.pipeline):
                counter.add_thinc(thinc_model)
        else:
            counter.add_thinc(model)
    return counter.total


def _pipe_models(pipeline: Iterable[Tuple[str, Any]]) -> Iterable[Any]:
    for _, pipe in pipeline:
        model = getattr(pipe, "model", None)
        if model not in (None, True, False):
            yield model
