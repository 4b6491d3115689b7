"""Inference speed of a saved checkpoint: `nlp.pipe` over a corpus, timed, scored and
optionally profiled."""

import cProfile
import io
import pstats
import statistics
from pathlib import Path
from timeit import default_timer as timer
from typing import Any, Dict, List, Optional, Union

# Where CPU time goes in nlp.pipe: cumulative time of the functions of each group (indented
# groups are part of the one above; groups are not exhaustive). (file name, function name).
PROFILE_GROUPS = {
    "nlp.pipe total": [("language.py", "pipe")],
    "tokenizer (make_doc)": [("language.py", "make_doc")],
    "tok2vec.predict": [("tok2vec.py", "predict")],
    "  hash embeddings (HashEmbed)": [("hashembed.py", "forward")],
    "  Maxout layers (thinc)": [("maxout.py", "forward")],
    "  torch encoder (PyTorchWrapper)": [("pytorchwrapper.py", "forward")],
    "    torch attention (SDPA)": [
        ("~", "<built-in method torch._C._nn.scaled_dot_product_attention>")
    ],
    "    torch linear": [("~", "<built-in method torch._C._nn.linear>")],
    "NER predict": [("vanilla_ner.py", "predict"), ("transition_parser.pyx", "predict")],
    "  Viterbi decoding": [("viterbi.py", "viterbi_flat")],
    "set_annotations": [
        ("vanilla_ner.py", "set_annotations"),
        ("transition_parser.pyx", "set_annotations"),
    ],
}


def read_docs(path: Union[str, Path], vocab: Any, limit: Optional[int] = None) -> List[Any]:
    from spacy.tokens import DocBin

    docs = list(DocBin().from_disk(path).get_docs(vocab))
    return docs[:limit] if limit is not None else docs


def gold_preproc(nlp: Any) -> bool:
    """Whether the config's dev corpus keeps the gold tokenization (else spaCy re-tokenizes
    the text, and so does the timed run)."""
    section, _, key = str(nlp.config["training"]["dev_corpus"]).partition(".")
    try:
        return bool(nlp.config[section][key].get("gold_preproc", False))
    except (KeyError, AttributeError):
        return False


def pipe_inputs(nlp: Any, gold_docs: List[Any], keep_tokens: bool) -> List[Any]:
    """What nlp.pipe gets: new unannotated Docs with the gold tokens, or texts."""
    from spacy.tokens import Doc

    if not keep_tokens:
        return [d.text for d in gold_docs]
    return [
        Doc(nlp.vocab, words=[t.text for t in d], spaces=[bool(t.whitespace_) for t in d])
        for d in gold_docs
    ]


def score(pred_docs: List[Any], gold_docs: List[Any]) -> Dict[str, Any]:
    from spacy.scorer import get_ner_prf
    from spacy.training import Example

    return get_ner_prf([Example(p, g) for p, g in zip(pred_docs, gold_docs)])


def load(model_dir: Union[str, Path], gpu_id: int) -> Any:
    """Load a pipeline on the GPU (gpu_id >= 0) or the CPU."""
    import spacy
    from thinc.api import require_cpu, require_gpu

    if gpu_id >= 0:
        require_gpu(gpu_id)
    else:
        require_cpu()
    return spacy.load(model_dir)


def score_file(
    model_dir: Union[str, Path], docs_path: Union[str, Path], batch_size: int, gpu_id: int
) -> Dict[str, Any]:
    """Entity P/R/F (and per type) of a checkpoint on a `.spacy` file, scored once."""
    nlp = load(model_dir, gpu_id)
    gold = read_docs(docs_path, nlp.vocab)
    pred = list(nlp.pipe(pipe_inputs(nlp, gold, gold_preproc(nlp)), batch_size=batch_size))
    return score(pred, gold)


def time_inference(
    model_dir: Union[str, Path],
    docs_path: Union[str, Path],
    batch_size: int,
    gpu_id: int,
    limit: Optional[int] = None,
    profile_to: Optional[Path] = None,
    passes: int = 3,
) -> Dict[str, Any]:
    """Load the checkpoint on the GPU (gpu_id >= 0) or the CPU, run `nlp.pipe` over the docs
    once on one batch to warm up, then `passes` times timed, and score the first pass's output.
    The words/s is that of the median pass: one pass of a few seconds is easily disturbed."""
    import torch

    if passes < 1:
        raise ValueError(f"passes must be at least 1, got {passes}")

    gpu = gpu_id >= 0
    nlp = load(model_dir, gpu_id)
    gold = read_docs(docs_path, nlp.vocab, limit)
    n_words = sum(len(d) for d in gold)
    keep_tokens = gold_preproc(nlp)
    # Warm-up on one batch (first-call allocations, kernel selection).
    list(nlp.pipe(pipe_inputs(nlp, gold[:batch_size], keep_tokens), batch_size=batch_size))
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    pass_seconds = []
    for i in range(passes):
        docs = pipe_inputs(nlp, gold, keep_tokens)
        started = timer()
        out = list(nlp.pipe(docs, batch_size=batch_size))
        if gpu:
            torch.cuda.synchronize()
        pass_seconds.append(timer() - started)
        if i == 0:
            pred = out  # scored below; later passes give the same docs
    seconds = statistics.median(pass_seconds)
    result: Dict[str, Any] = {
        "wps": n_words / seconds,
        "seconds": seconds,
        "pass_seconds": pass_seconds,
        "words": n_words,
        "docs": len(gold),
        "inputs": "gold-tokenized Docs" if keep_tokens else "texts (tokenized by the pipeline)",
        "ents_f": score(pred, gold)["ents_f"],
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if gpu else None,
    }
    if profile_to is not None:
        result["profile"] = profile_pipe(
            nlp, pipe_inputs(nlp, gold, keep_tokens), batch_size, profile_to
        )
    return result


def profile_pipe(nlp: Any, docs: List[Any], batch_size: int, out_path: Path) -> Dict[str, Any]:
    """Run nlp.pipe under cProfile; write the profile to `out_path` and return the
    cumulative seconds of each of PROFILE_GROUPS."""
    profiler = cProfile.Profile()
    started = timer()
    profiler.enable()
    for _ in nlp.pipe(docs, batch_size=batch_size):
        pass
    profiler.disable()
    wall = timer() - started
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(stream.getvalue(), encoding="utf8")
    summary: Dict[str, Any] = {"wall_seconds_profiled": round(wall, 3)}
    for group, keys in PROFILE_GROUPS.items():
        for (filename, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
            if any(filename.endswith(f) and func == fn for f, fn in keys):
                summary[group] = round(summary.get(group, 0.0) + ct, 3)
    summary["profile_file"] = str(out_path)
    return summary
