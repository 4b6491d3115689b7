"""int8 inference on CPU: the encoder's linear layers run with int8 weights and dynamically
quantized int8 activations (torch's `quantize_dynamic`, fbgemm/x86 kernels), for prediction only.

How it is used: `set_inference_dtype(nlp, "int8")` on a loaded pipeline, or the callback
`spacy-vanilla-ner.Int8Inference.v1` as `[nlp] after_pipeline_creation`, in a config or at load
time:

    nlp = spacy.load(path, config={"nlp": {"after_pipeline_creation": {
        "@callbacks": "spacy-vanilla-ner.Int8Inference.v1"}}})

The trained float32 weights stay the model's weights: training, `to_disk` and `to_bytes` use
and save them, and a pipeline saved with int8 inference loads as before. The int8 copy is made
from them at the first prediction and made again when they change (an update, `from_disk`,
the optimizer's averages swapped in for evaluation), so it always predicts with the current
weights. On a GPU the setting has no effect (with a warning): the copy is a CPU model.
"""

import copy
import threading
import warnings
from typing import Any, Callable, List, Optional, Tuple

import torch
from spacy.util import registry
from torch import nn

INFERENCE_DTYPES = ("float32", "int8")
# `spacy.load(path, config=INT8_LOAD_CONFIG)`: a pipeline whose encoders predict in int8.
INT8_LOAD_CONFIG = {
    "nlp": {"after_pipeline_creation": {"@callbacks": "spacy-vanilla-ner.Int8Inference.v1"}}
}


def check_inference_dtype(dtype: str) -> str:
    if dtype not in INFERENCE_DTYPES:
        raise ValueError(
            f"inference dtype must be one of {INFERENCE_DTYPES}, got {dtype!r}: 'int8' runs "
            "the encoder's linear layers in int8 on CPU, 'float32' as trained"
        )
    if dtype == "int8":
        engines = getattr(torch.backends, "quantized", None)
        supported = list(getattr(engines, "supported_engines", []))
        quantize = getattr(getattr(torch.ao, "quantization", None), "quantize_dynamic", None)
        if quantize is None or not any(e in supported for e in ("x86", "fbgemm", "qnnpack")):
            raise RuntimeError(
                f"int8 inference needs torch's dynamic quantization (torch.ao.quantization."
                f"quantize_dynamic and a quantized engine), which torch {torch.__version__} "
                f"here lacks (engines: {supported}); use 'float32'"
            )
    return dtype


class Int8Copy:
    """A dynamically quantized copy of a module, remade when the module's parameters change.

    The cache key is each parameter's storage and version counter and the module's count of
    optimizer steps: a replaced tensor changes the storage, torch's in-place changes bump the
    version (`load_state_dict`, the averages swapped in for evaluation), and thinc's optimizer,
    which writes through numpy where torch's counters do not see it, is counted by the
    encoder's shim (`encoder.count_update`). (A checksum of the weights instead cost an eighth
    of the tagging time on two threads.) Thread-safe: one thread builds the copy, the others
    wait for it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: Optional[Tuple[Any, ...]] = None
        self._copy: Optional[nn.Module] = None

    @staticmethod
    def _key_of(module: nn.Module, updates: int) -> Tuple[Any, ...]:
        return (updates, *((p.data_ptr(), p._version) for p in module.parameters()))

    def get(self, module: nn.Module, updates: int = 0) -> nn.Module:
        """The int8 copy of `module`, remade if its weights changed. updates (int): the
        optimizer steps taken on it so far."""
        key = self._key_of(module, updates)
        with self._lock:
            if self._copy is None or key != self._key:
                self._copy = quantize(module)
                self._key = key
            return self._copy


def quantize(module: nn.Module) -> nn.Module:
    """A copy of `module` with every `nn.Linear` as a dynamically quantized int8 layer."""
    source = copy.deepcopy(module).cpu().eval()
    with warnings.catch_warnings():
        # torch marks eager-mode quantization deprecated in favour of torchao; it is what
        # torch itself ships with fbgemm kernels for CPU.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(source, {nn.Linear}, dtype=torch.qint8)


def set_inference_dtype(nlp: Any, dtype: str) -> int:
    """Make every vanilla Transformer encoder in `nlp` predict in `dtype` ("int8" or
    "float32") from now on. RETURNS (int): the number of encoders set. Raises ValueError if
    the pipeline has none."""
    from .windowing import WindowedEncoder

    check_inference_dtype(dtype)
    encoders: List[WindowedEncoder] = []
    for _name, component in nlp.components:
        model = getattr(component, "model", None)
        if model is None or not hasattr(model, "walk"):
            continue
        for node in model.walk():
            for shim in node.shims:
                module = getattr(shim, "_model", None)
                if isinstance(module, WindowedEncoder) and module not in encoders:
                    encoders.append(module)
    if not encoders:
        raise ValueError(
            f"set_inference_dtype: the pipeline ({nlp.pipe_names}) has no "
            "spacy-vanilla-ner TransformerEncoder; int8 inference applies to it only"
        )
    for module in encoders:
        module.inference_dtype = dtype
    return len(encoders)


@registry.callbacks("spacy-vanilla-ner.Int8Inference.v1")
def make_int8_inference() -> Callable[[Any], Any]:
    """For `[nlp] after_pipeline_creation`: the pipeline's vanilla Transformer encoders predict
    with int8 linear layers on CPU (`set_inference_dtype(nlp, "int8")`)."""
    check_inference_dtype("int8")  # before any work: a torch without it fails here
    return int8_inference


def int8_inference(nlp: Any) -> Any:
    set_inference_dtype(nlp, "int8")
    return nlp
