#!/usr/bin/env python
"""Where training and inference time goes in a tok2vec + vanilla_ner pipeline: words/s, and
the seconds of each stage (featurisation, encoder, listener, tagger head, loss/CRF, optimizer,
tokenizer, decoding, set_annotations, the rest).

    python benchmarks/throughput.py --systems transformer_vner,cnn_vner --threads 1
    python benchmarks/throughput.py --host-only

For each system (`--systems NAME` is `configs/NAME.cfg`, `NAME=PATH` any config; `--config
PATH` alone is the same as `--systems STEM=PATH`), in this process, one after the other:

1. initializes the pipeline as `spacy train` does (`init_nlp`, seeded with `--seed`) on
   `--train` (a CoNLL file, converted `--n-sents` sentences per doc into `--work-dir`, or a
   `.spacy` file);
2. training: runs spaCy's own loop (`train_while_improving`, with the config's batcher,
   dropout and optimizer; no dev evaluation) for `--warmup-steps` untimed updates, then
   2 × `--train-steps` updates, plain (timed as a whole: the words/s figure) and with a timer
   around each stage (the breakdown) in turn;
3. inference: `nlp.pipe` over the `--dev` texts with `--infer-batch-size`, after one warm-up
   batch: passes over them, plain (the words/s figure) and with the stage timers in turn,
   until the plain ones have taken `--infer-seconds`.

Plain and instrumented runs alternate so that drift (first-time shapes, load from other
processes) hits both alike.

The stage timers wrap, at run time and in this script only, the forward functions of the
tok2vec's `embed` and `encode` layers, the listener and the tagger head, and the methods of the
pipes that the stages name (see `STAGES`). Each second counts for one stage only, the innermost
running one: the encoder's backward pass, which runs inside the listener's backprop callback,
counts for the encoder, not the listener. "rest" is the step's (or the pass's) time outside
every stage. The instrumented runs are slower than the plain ones (the timer calls, and on a
GPU a `torch.cuda.synchronize()` at every clock read, which also removes the overlap of host and
GPU work); the report gives both words/s, and the words/s figures are the plain runs'.

`--host-only` replaces each system's encoder by a pass-through and makes the tok2vec 8 wide
(`PASS_THROUGH`): the speed of everything around the encoder, the ceiling that a faster encoder
can approach.

Writes `--output` (JSON: meta, one row per system) and a markdown report next to it (`.md`),
and prints the report. The training and inference words/s depend on the load of the machine:
run it on an otherwise idle one.
"""

import argparse
import gc
import inspect
import math
import re
import shlex
import sys
import types
from contextlib import ExitStack, contextmanager
from pathlib import Path
from timeit import default_timer
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from vanilla_ner_experiments import cli
from vanilla_ner_experiments.conll import convert_corpora
from vanilla_ner_experiments.machine import device_info, package_versions
from vanilla_ner_experiments.reports import table, write_results
from vanilla_ner_experiments.systems import SystemSpec, device_overrides, parse_systems

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SYSTEMS = ["transformer_vner"]
WIKIGOLD = REPO / "assets" / "wikigold"
HOST_ONLY_WIDTH = 8
PASS_THROUGH = "spacy-vanilla-ner-benchmarks.PassThrough.v1"

# key: (label, what it times), in the order of the reports; TRAIN_STAGES and INFER_STAGES
# say which stages a training step and an inference pass have.
STAGES: Dict[str, Tuple[str, str]] = {
    "tokenizer": ("tokenizer", "`Language.make_doc` (the tokenizer) on each text"),
    "featurisation_forward": (
        "featurisation forward",
        "the tok2vec's `embed` layer, forward (e.g. `NormDropout` and `MultiHashEmbed`: "
        "hashed features, table lookups, the Maxout mixing layer)",
    ),
    "featurisation_backward": ("featurisation backward", "the `embed` layer, backward"),
    "encoder_forward": ("encoder forward", "the tok2vec's `encode` layer, forward"),
    "encoder_backward": ("encoder backward", "the `encode` layer, backward"),
    "listener": (
        "listener",
        "the hand-off between `tok2vec` and `vanilla_ner`: `Tok2Vec.update` outside its model "
        "(batch id, gradient buffers, `receive`), the `Tok2VecListener` forward (batch-id "
        "check; at inference, reading `doc.tensor`) and its backprop callback (summing the "
        "gradients) outside the nested backward passes, and `Tok2Vec.set_annotations` "
        "(writing `doc.tensor`)",
    ),
    "head": (
        "tagger head",
        "the layers after the listener: `with_array(Softmax)` (and hidden layers) and the "
        "CRF layer, forward and backward",
    ),
    "loss": (
        "loss/CRF",
        "`VanillaNER.get_loss`: gold BILUO tags, CRF (or softmax) loss and gradient",
    ),
    "optimizer": (
        "optimizer",
        "`finish_update` of each component (the optimizer on thinc and torch parameters, "
        "averages) and `Optimizer.step_schedules`",
    ),
    "decoding_viterbi": ("decoding: Viterbi", "`viterbi_flat`"),
    "decoding_other": (
        "decoding: other",
        "`VanillaNER.predict` outside its model and `viterbi_flat`: log-probabilities, "
        "space masks, transition constraints, the repaired-sequence count",
    ),
    "set_annotations": ("set_annotations", "`VanillaNER.set_annotations` (writing `doc.ents`)"),
    "rest": (
        "rest",
        "the step's time outside every stage: `Language.update` (copying the examples), "
        "batching, the glue of `chain` and of the pipes, spaCy's loop; at inference "
        "`nlp.pipe`'s batching and `Tok2Vec.predict`",
    ),
}
TRAIN_STAGES = [
    "featurisation_forward",
    "featurisation_backward",
    "encoder_forward",
    "encoder_backward",
    "listener",
    "head",
    "loss",
    "optimizer",
    "rest",
]
INFER_STAGES = [
    "tokenizer",
    "featurisation_forward",
    "encoder_forward",
    "listener",
    "head",
    "decoding_viterbi",
    "decoding_other",
    "set_annotations",
    "rest",
]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--train", type=Path, default=WIKIGOLD / "train.conll", help="CoNLL or .spacy file"
    )
    p.add_argument("--dev", type=Path, default=WIKIGOLD / "dev.conll", help="CoNLL or .spacy file")
    p.add_argument(
        "--n-sents", type=int, default=1, help="CoNLL input: sentences per doc (0 = per article)"
    )
    cli.add_system_arguments(p, DEFAULT_SYSTEMS, REPO / "configs")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="One config to measure (instead of --systems); named by its file stem",
    )
    p.add_argument("--seed", type=int, default=0, help="training.seed (and system.seed)")
    p.add_argument(
        "--warmup-steps", type=int, default=20, help="Untimed updates first (at least 1)"
    )
    p.add_argument(
        "--train-steps",
        type=int,
        default=200,
        help="Plain updates, and as many with the stage timers",
    )
    p.add_argument("--infer-batch-size", type=int, default=256, help="nlp.pipe batch size")
    p.add_argument(
        "--infer-seconds",
        type=float,
        default=5.0,
        help="Repeat nlp.pipe over the dev texts until this many seconds have passed "
        "(at least one pass)",
    )
    p.add_argument(
        "--host-only",
        action="store_true",
        help=f"Replace the encoder by a pass-through, tok2vec width {HOST_ONLY_WIDTH}",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads (1 for comparable runs)"
    )
    cli.add_device_arguments(p, transformer_model=False)  # vanilla_ner pipelines only
    p.add_argument(
        "--work-dir",
        type=Path,
        default=REPO / "benchmarks" / "runs" / "throughput",
        help="Converted corpora (not committed)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=REPO / "benchmarks" / "results" / "throughput.json",
        help="JSON results; the .md is written next to it",
    )
    p.add_argument("--title", default="Where the time goes", help="Title of the markdown report")
    args = p.parse_args(argv)
    if args.config is not None:
        if args.systems != ",".join(DEFAULT_SYSTEMS):
            p.error("give --config or --systems, not both")
        args.systems = f"{args.config.stem}={args.config}"
    if args.warmup_steps < 1:
        p.error("--warmup-steps must be at least 1 (spaCy's loop runs its step-0 hook there)")
    if args.train_steps < 1 or args.infer_batch_size < 1 or args.threads < 1:
        p.error("--train-steps, --infer-batch-size and --threads must be positive")
    if args.n_sents < 0 or args.infer_seconds < 0:
        p.error("--n-sents and --infer-seconds must not be negative")
    cli.device_settings(args)
    return args


# --- The clock and the stage timers ------------------------------------------------------


def device_sync(gpu_id: int) -> Callable[[], None]:
    """What to call before each clock read: nothing on the CPU; on a GPU, wait for the queued
    torch and cupy work, so that a stage's seconds are its own and not its successor's."""
    if gpu_id < 0:
        return lambda: None
    import torch

    try:
        import cupy
    except ImportError:
        cupy = None

    def sync() -> None:
        torch.cuda.synchronize()
        if cupy is not None:
            cupy.cuda.get_current_stream().synchronize()

    return sync


class StageTimer:
    """Exclusive seconds per stage: while a stage runs inside another, the clock counts for
    the inner one only, so the stages never count a second twice.

    sync (callable): called before each clock read (`device_sync`).
    clock (callable): seconds (tests give a fake one).
    """

    def __init__(
        self, sync: Callable[[], None] = lambda: None, clock: Callable[[], float] = default_timer
    ) -> None:
        self.sync = sync
        self.clock = clock
        self.seconds: Dict[str, float] = {}
        self.regions = 0
        self._stack: List[List[Any]] = []  # [stage, when it (last) resumed]

    def now(self) -> float:
        self.sync()
        return self.clock()

    def _add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = self.now()
        if self._stack:  # pause the enclosing stage
            outer = self._stack[-1]
            self._add(outer[0], started - outer[1])
        self._stack.append([name, started])
        try:
            yield
        finally:
            ended = self.now()
            stage, resumed = self._stack.pop()
            self._add(stage, ended - resumed)
            self.regions += 1
            if self._stack:
                self._stack[-1][1] = ended

    def timed(self, name: str, func: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return func(*args, **kwargs)

        return wrapper

    def timed_forward(self, forward_name: str, backward_name: str, func: Callable) -> Callable:
        """A thinc forward function `func` whose forward and backward passes are timed."""

        def forward(model: Any, X: Any, is_train: bool) -> Tuple[Any, Callable]:
            with self.stage(forward_name):
                Y, backprop = func(model, X, is_train=is_train)
            return Y, self.timed(backward_name, backprop)

        return forward


@contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    """Set `obj.name` to `value` for the duration, then restore it. A method an instance
    gets from its class is shadowed by an attribute of the instance, deleted after."""
    static = inspect.getattr_static(type(obj), name, None)
    shadows_method = (
        not isinstance(obj, (type, types.ModuleType))
        and name not in getattr(obj, "__dict__", {})
        and static is not None
        and not hasattr(type(static), "__set__")  # not a slot or property
    )
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if shadows_method:
            delattr(obj, name)
        else:
            setattr(obj, name, old)


def pipes(nlp: Any) -> Tuple[Any, Any]:
    """The `tok2vec` and `vanilla_ner` pipes; exits if the pipeline has no such pair."""
    by_factory = {nlp.get_pipe_meta(n).factory: nlp.get_pipe(n) for n in nlp.pipe_names}
    tok2vec, ner = by_factory.get("tok2vec"), by_factory.get("vanilla_ner")
    if tok2vec is None or ner is None:
        raise SystemExit(
            f"throughput.py measures a pipeline of `tok2vec` and `vanilla_ner`; this one has "
            f"{nlp.pipe_names}"
        )
    return tok2vec, ner


def head_layers(ner: Any) -> List[Any]:
    """The layers of `vanilla_ner`'s model after its Tok2VecListener (the tagger head), and
    its CRF layer."""
    from spacy.pipeline.tok2vec import Tok2VecListener

    for node in ner.model.walk():
        if node.layers and isinstance(node.layers[0], Tok2VecListener):
            crf = [ner.model.get_ref("crf")] if ner.model.has_ref("crf") else []
            return list(node.layers[1:]) + crf
    raise SystemExit(
        "throughput.py needs vanilla_ner's model to start with a spacy.Tok2VecListener "
        "(as in configs/*_vner.cfg)"
    )


@contextmanager
def instrumented(nlp: Any, timer: StageTimer) -> Iterator[None]:
    """The stage timers of `STAGES` around the pipeline's layers and methods, removed after."""
    from spacy.pipeline.tok2vec import Tok2VecListener
    from thinc.api import Optimizer

    import spacy_vanilla_ner.pipeline.vanilla_ner as ner_module

    tok2vec, ner = pipes(nlp)
    for ref in ("embed", "encode"):
        if not tok2vec.model.has_ref(ref):
            raise SystemExit(f"the tok2vec model has no {ref!r} layer (use spacy.Tok2Vec.v2)")
    if not hasattr(ner_module, "viterbi_flat"):
        raise SystemExit("spacy_vanilla_ner.pipeline.vanilla_ner no longer calls viterbi_flat")
    layers = [
        (tok2vec.model.get_ref("embed"), "featurisation_forward", "featurisation_backward"),
        (tok2vec.model.get_ref("encode"), "encoder_forward", "encoder_backward"),
    ]
    layers += [
        (n, "listener", "listener") for n in ner.model.walk() if isinstance(n, Tok2VecListener)
    ]
    layers += [(n, "head", "head") for n in head_layers(ner)]
    methods = [
        (nlp, "make_doc", "tokenizer"),
        (tok2vec, "update", "listener"),
        (tok2vec, "set_annotations", "listener"),
        (ner, "get_loss", "loss"),
        (ner, "predict", "decoding_other"),
        (ner, "set_annotations", "set_annotations"),
        (ner_module, "viterbi_flat", "decoding_viterbi"),
        (tok2vec, "finish_update", "optimizer"),
        (ner, "finish_update", "optimizer"),
    ]
    with ExitStack() as stack:
        for layer, forward, backward in layers:
            wrapped = timer.timed_forward(forward, backward, layer._func)
            stack.enter_context(_patched(layer, "_func", wrapped))
        for obj, name, stage in methods:
            stack.enter_context(_patched(obj, name, timer.timed(stage, getattr(obj, name))))
        # Optimizer has __slots__: its method is wrapped on the class, for the duration.
        step = timer.timed("optimizer", Optimizer.step_schedules)
        stack.enter_context(_patched(Optimizer, "step_schedules", step))
        yield


def breakdown(timer: StageTimer, total: float, stages: Sequence[str]) -> Dict[str, float]:
    """Seconds per stage, in the order of `stages` (then any other stage that ran), and
    "rest": `total` minus the others."""
    order = [s for s in stages if s != "rest"]
    order += sorted(set(timer.seconds) - set(order))
    out = {s: timer.seconds.get(s, 0.0) for s in order}
    out["rest"] = total - sum(out.values())
    return out


# --- The host-only pipeline ----------------------------------------------------------------


def register_pass_through() -> None:
    from spacy.util import registry
    from thinc.api import Model

    if PASS_THROUGH in registry.architectures:
        return

    @registry.architectures(PASS_THROUGH)
    def build_pass_through(width: int) -> Any:
        """The `encode` slot of spacy.Tok2Vec.v2 with no encoder: its input, unchanged."""

        def forward(model: Any, X: Any, is_train: bool) -> Tuple[Any, Callable]:
            return X, lambda dY: dY

        return Model("pass_through", forward, dims={"nI": width, "nO": width})


def host_only_config(config: Any) -> Any:
    """`config` with the tok2vec's encoder replaced by `PASS_THROUGH` and every width of the
    tok2vec (embedding, encoder) and of its listeners set to HOST_ONLY_WIDTH."""

    register_pass_through()
    components = config["components"]
    names = [n for n, c in components.items() if c.get("factory") == "tok2vec"]
    if not names:
        raise SystemExit("--host-only: the config has no tok2vec component")
    for name in names:
        model = components[name]["model"]
        model["encode"] = {"@architectures": PASS_THROUGH, "width": HOST_ONLY_WIDTH}
        for node in _blocks(model):
            if "width" in node:
                node["width"] = HOST_ONLY_WIDTH
    for component in components.values():
        for node in _blocks(component):
            if str(node.get("@architectures", "")).startswith("spacy.Tok2VecListener"):
                node["width"] = HOST_ONLY_WIDTH
    return config


def _blocks(block: Any) -> Iterator[Dict[str, Any]]:
    if isinstance(block, dict):
        yield block
        for value in block.values():
            yield from _blocks(value)


# --- Training and inference -------------------------------------------------------------------


def init_pipeline(spec: SystemSpec, args: argparse.Namespace, paths: Dict[str, Path]) -> Any:
    """The pipeline of `spec` initialized as `spacy train` does.

    RETURNS (tuple): the pipeline, its resolved [training] section and the overrides used.
    """
    from spacy.schemas import ConfigSchemaTraining
    from spacy.training.initialize import init_nlp
    from spacy.util import load_config, load_config_from_str, registry
    from thinc.api import fix_random_seed, require_cpu, require_gpu

    from vanilla_ner_experiments.budget import seed_overrides

    if args.gpu_id >= 0:
        require_gpu(args.gpu_id)
    else:
        require_cpu()
    raw = load_config(spec.config, interpolate=False)
    overrides = dict(spec.overrides)
    if args.host_only:
        raw = host_only_config(raw)
        # Settings of the encoder that is no longer there.
        gone = [k for k in overrides if re.match(r"components\.[^.]+\.model\.encode\.", k)]
        for key in gone:
            print(f"[{spec.name}] --host-only: ignoring --set {key}", flush=True)
            del overrides[key]
    overrides = {
        "paths.train": str(paths["train"]),
        "paths.dev": str(paths["dev"]),
        **device_overrides(spec.config, args.gpu_id, args.gpu_allocator, args.mixed_precision),
        **overrides,
        **seed_overrides(raw, args.seed),
    }
    config = load_config_from_str(raw.to_str(), overrides=overrides, interpolate=False)
    nlp = init_nlp(config, use_gpu=args.gpu_id)
    fix_random_seed(args.seed)
    T = registry.resolve(nlp.config.interpolate()["training"], schema=ConfigSchemaTraining)
    return nlp, T, overrides


def alternate(
    nlp: Any,
    work: Callable[[Any], int],
    prepare: Callable[[], Any],
    sync: Callable[[], None],
    stages: Sequence[str],
    runs: int = 0,
    min_seconds: float = 0.0,
) -> Dict[str, Any]:
    """Run `work(prepare())` (it returns the words it processed) alternately plain and with
    the stage timers, `runs` times each (or, with runs = 0, until the plain runs have taken
    `min_seconds`, at least once), so that drift (warm-up, load from other processes) hits
    both alike. `prepare` is not timed. RETURNS (dict): words, seconds and words/s of the
    plain runs, and of the instrumented ones with the seconds per stage."""
    timer = StageTimer(sync)
    plain, timed, done = [0, 0.0], [0, 0.0], 0
    while done < runs if runs else (done == 0 or plain[1] < min_seconds):
        inputs = prepare()
        sync()
        started = default_timer()
        plain[0] += work(inputs)
        sync()
        plain[1] += default_timer() - started
        inputs = prepare()
        with instrumented(nlp, timer):
            started = timer.now()
            timed[0] += work(inputs)
            timed[1] += timer.now() - started
        done += 1
    return {
        "runs": done,
        "words": plain[0],
        "seconds": plain[1],
        "wps": plain[0] / plain[1],
        "instrumented": {
            "runs": done,
            "words": timed[0],
            "seconds": timed[1],
            "wps": timed[0] / timed[1],
            "timed_regions": timer.regions,
            "stages": breakdown(timer, timed[1], stages),
        },
        "instrumentation_overhead": (timed[1] / timed[0]) / (plain[1] / plain[0]) - 1.0,
    }


def training_loop(nlp: Any, T: Dict[str, Any]) -> Iterator[Tuple[Any, Any, bool]]:
    """spaCy's own training loop (`train_while_improving`) over the [training] corpus, with the
    config's batcher, dropout and optimizer, for ever (epochs repeat) and with no dev
    evaluation: each `next()` makes one update and yields (batch, info, is_best_checkpoint)."""
    from spacy.training.loop import create_train_batches, train_while_improving
    from spacy.util import resolve_dot_names

    (corpus,) = resolve_dot_names(nlp.config.interpolate(), [T["train_corpus"]])
    examples = list(corpus(nlp))
    return train_while_improving(
        nlp,
        T["optimizer"],
        create_train_batches(nlp, lambda _nlp: examples, T["batcher"], 0),
        lambda: (0.0, {}),  # no dev evaluation: only step 0 calls it
        dropout=T["dropout"],
        eval_frequency=10**12,
        accumulate_gradient=T["accumulate_gradient"],
        patience=0,
        max_steps=0,
        exclude=T["frozen_components"],
        annotating_components=T["annotating_components"],
        before_update=T["before_update"],
    )


def measure_training(
    nlp: Any, T: Dict[str, Any], warmup: int, steps: int, sync: Callable[[], None]
) -> Dict[str, Any]:
    """Updates with spaCy's loop: `warmup` untimed, then `steps` plain and `steps` with the
    stage timers, alternating. RETURNS (dict): the training part of a row."""
    loop = training_loop(nlp, T)

    def update(_: Any = None) -> int:
        batch, _info, _ = next(loop)
        return sum(len(eg) for eg in batch)

    for _ in range(warmup):
        update()
    result = alternate(nlp, update, lambda: None, sync, TRAIN_STAGES, runs=steps)
    return {"warmup_steps": warmup, "words_per_step": result["words"] / steps, **result}


def measure_inference(
    nlp: Any, gold: List[Any], batch_size: int, min_seconds: float, sync: Callable[[], None]
) -> Dict[str, Any]:
    """`nlp.pipe` over the texts of `gold` (or new Docs of its tokens when the config keeps the
    gold tokenization), after one warm-up batch: passes alternately plain and with the stage
    timers, until the plain ones have taken `min_seconds`."""
    from vanilla_ner_experiments.inference import gold_preproc, pipe_inputs

    keep_tokens = gold_preproc(nlp)
    texts = None if keep_tokens else pipe_inputs(nlp, gold, False)

    def prepare() -> List[Any]:
        return texts or pipe_inputs(nlp, gold, keep_tokens)  # new Docs for every pass

    def run(inputs: List[Any]) -> int:
        return sum(len(doc) for doc in nlp.pipe(inputs, batch_size=batch_size))

    run(prepare()[:batch_size])
    result = alternate(nlp, run, prepare, sync, INFER_STAGES, min_seconds=min_seconds)
    return {
        "batch_size": batch_size,
        "inputs": "gold-tokenized Docs" if keep_tokens else "texts",
        "docs_per_pass": len(gold),
        **result,
    }


def measure_system(
    spec: SystemSpec, args: argparse.Namespace, paths: Dict[str, Path]
) -> Dict[str, Any]:
    from vanilla_ner_experiments.inference import read_docs
    from vanilla_ner_experiments.params import count_params

    sync = device_sync(args.gpu_id)
    nlp, T, overrides = init_pipeline(spec, args, paths)
    pipes(nlp)  # a pipeline it cannot measure fails before the training
    n_params = count_params(nlp)
    print(f"[{spec.name}] {nlp.pipe_names}, {n_params:,} parameters", flush=True)
    train = measure_training(nlp, T, args.warmup_steps, args.train_steps, sync)
    print(f"[{spec.name}] training: {train['wps']:,.0f} words/s", flush=True)
    gold = read_docs(paths["dev"], nlp.vocab)
    infer = measure_inference(nlp, gold, args.infer_batch_size, args.infer_seconds, sync)
    print(f"[{spec.name}] inference: {infer['wps']:,.0f} words/s", flush=True)
    return {
        "system": spec.name,
        "config": str(spec.config),
        "host_only": args.host_only,
        "overrides": overrides,
        "pipeline": nlp.pipe_names,
        "n_params": n_params,
        "train": train,
        "infer": infer,
    }


# --- Report -------------------------------------------------------------------------------------


def _ratio(value: float, first: float) -> str:
    return "" if math.isclose(value, first) else f" ({value / first:.2f}×)"


def stage_table(rows: List[Dict[str, Any]], part: str) -> List[str]:
    """Milliseconds per 1,000 words and share of the instrumented time, per stage and system."""
    header = ["Stage"] + [f"`{r['system']}` ms / 1k words (share)" for r in rows]
    stages: List[str] = []
    for row in rows:
        stages += [s for s in row[part]["instrumented"]["stages"] if s not in stages]
    stages.sort(key=lambda s: s == "rest")  # rest last
    lines = []
    for stage in [*stages, "total"]:
        cells = [STAGES[stage][0] if stage != "total" else "**total (instrumented)**"]
        for row in rows:
            timed = row[part]["instrumented"]
            seconds = timed["seconds"] if stage == "total" else timed["stages"].get(stage, 0.0)
            ms = 1e6 * seconds / timed["words"]
            cells.append(f"{ms:,.2f} ({seconds / timed['seconds']:.0%})")
        lines.append(cells)
    return table(header, lines)


def markdown(rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    s = meta["settings"]
    lines = [
        f"# {meta['title']}",
        "",
        f"Written by `benchmarks/throughput.py`. Device: **{meta['device']}** (torch threads: "
        f"{meta['torch_threads']}).",
        "",
        f"Command: `{meta['command']}`",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + ".",
        "",
        f"Data: {meta['data']}",
        "",
        f"Training: {s['warmup_steps']} untimed updates, then {s['train_steps']} plain (words/s) "
        f"and {s['train_steps']} with the stage timers, in turn, with spaCy's loop and the "
        f"config's batcher, seed {s['seed']}. Inference: "
        f"`nlp.pipe(batch_size={s['infer_batch_size']})` over the dev docs, passes plain and "
        f"with the stage timers in turn, until the plain ones took {s['infer_seconds']:g} s."
        + (
            f" **Host only**: the encoder is a pass-through, the tok2vec {HOST_ONLY_WIDTH} wide."
            if s["host_only"]
            else ""
        ),
        "",
        "## Words per second",
        "",
    ]
    first = rows[0]
    header = ["System", "params", "train w/s", "instrumented (overhead)", "words / update"]
    header += ["infer w/s", "instrumented (overhead)"]
    body = []
    for r in rows:
        tr, inf = r["train"], r["infer"]
        body.append(
            [
                f"`{r['system']}`",
                f"{r['n_params']:,}",
                f"{tr['wps']:,.0f}{_ratio(tr['wps'], first['train']['wps'])}",
                f"{tr['instrumented']['wps']:,.0f} ({tr['instrumentation_overhead']:+.0%})",
                f"{tr['words_per_step']:,.0f}",
                f"{inf['wps']:,.0f}{_ratio(inf['wps'], first['infer']['wps'])}",
                f"{inf['instrumented']['wps']:,.0f} ({inf['instrumentation_overhead']:+.0%})",
            ]
        )
    lines += table(header, body)
    if len(rows) > 1:
        lines += ["", f"(×: the ratio to `{first['system']}`, measured in the same run.)"]
    lines += ["", "## Training: where the time goes", ""]
    lines += stage_table(rows, "train")
    lines += ["", "## Inference: where the time goes", ""]
    lines += stage_table(rows, "infer")
    lines += ["", "## The stages", ""]
    lines += [f"- **{label}**: {what}." for label, what in STAGES.values()]
    lines += ["", meta["note"]]
    return "\n".join(lines) + "\n"


NOTE = (
    "Words/s come from the plain runs; the stage times from the instrumented runs, which "
    "alternate with them and whose overhead is given beside their words/s (on a GPU it "
    "includes a synchronisation at every clock read). A second counts for the innermost "
    "running stage only; *rest* is what no stage covers."
)


def corpus_paths(args: argparse.Namespace) -> Tuple[Dict[str, Path], str]:
    """The .spacy files of --train and --dev (a CoNLL file is converted into --work-dir), and a
    line that says what they hold."""
    import spacy
    from spacy.tokens import DocBin

    given = {"train": args.train, "dev": args.dev}
    absent = [f"--{name} {path}" for name, path in given.items() if not path.exists()]
    if absent:
        raise SystemExit(f"not found: {', '.join(absent)}")
    conll = [(name, path, None) for name, path in given.items() if path.suffix != ".spacy"]
    info = convert_corpora(conll, args.work_dir / "data", args.n_sents) if conll else {}
    paths, parts = {}, []
    for name, path in given.items():
        if name in info:
            paths[name] = Path(info[name]["spacy"])
            n_docs, n_words = info[name]["docs"], info[name]["words"]
        else:
            paths[name] = path
            docs = list(DocBin().from_disk(path).get_docs(spacy.blank("en").vocab))
            n_docs, n_words = len(docs), sum(len(d) for d in docs)
        parts.append(f"{name} `{path}` ({n_docs:,} docs, {n_words:,} words)")
    per_doc = f"; CoNLL converted {args.n_sents} sentence(s) per doc" if conll else ""
    return paths, ", ".join(parts) + per_doc + "."


def main(argv: Optional[Sequence[str]] = None) -> int:
    import torch

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    specs = parse_systems(args.systems, args.configs_dir, args.overrides)
    for spec in specs:
        if not spec.config.exists():
            raise SystemExit(f"config not found: {spec.config}")
    torch.set_num_threads(args.threads)
    device = device_info(args.gpu_id)
    paths, data = corpus_paths(args)
    meta = {
        "title": args.title + (" (host only)" if args.host_only else ""),
        "script": "benchmarks/throughput.py",
        "command": "python " + shlex.join(["benchmarks/throughput.py", *argv]),
        "device": device["name"],
        "device_info": device,
        "torch_threads": device["torch_threads"],
        "versions": package_versions(),
        "data": data,
        "settings": {
            "seed": args.seed,
            "warmup_steps": args.warmup_steps,
            "train_steps": args.train_steps,
            "infer_batch_size": args.infer_batch_size,
            "infer_seconds": args.infer_seconds,
            "host_only": args.host_only,
            "gpu_id": args.gpu_id,
        },
        "stages": {key: {"label": label, "times": what} for key, (label, what) in STAGES.items()},
        "train_stages": TRAIN_STAGES,
        "infer_stages": INFER_STAGES,
        "note": NOTE,
    }
    rows = []
    for spec in specs:
        rows.append(measure_system(spec, args, paths))
        gc.collect()
    write_results(args.output, {"meta": meta, "rows": rows}, markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
