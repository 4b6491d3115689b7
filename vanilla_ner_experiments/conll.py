"""CoNLL files to `.spacy` DocBins for the benchmark, with the package's converter."""

from pathlib import Path
from timeit import default_timer as timer
from typing import Any, Callable, Dict, Optional, Sequence, Tuple


def convert_corpora(
    splits: Sequence[Tuple[str, Optional[Path], Optional[int]]],
    out_dir: Path,
    n_sents: int,
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Convert (split, CoNLL path, doc limit) triples to `out_dir/<split>.spacy` with
    `spacy_vanilla_ner.convert.conll_to_docs`, `n_sents` sentences of one article per doc
    (0 = one doc per article). Splits without a path are left out.

    RETURNS (dict): n_sents, and per split its source, .spacy path, docs, words and entities.
    """
    import spacy
    from spacy.tokens import DocBin

    from spacy_vanilla_ner.convert import conll_to_docs

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = spacy.blank("en").vocab
    info: Dict[str, Any] = {"n_sents": n_sents}
    for split, path, limit in splits:
        if path is None:
            continue
        started = timer()
        docs = conll_to_docs(path, vocab, n_sents=n_sents, limit=limit)
        out = out_dir / f"{split}.spacy"
        DocBin(docs=docs, store_user_data=False).to_disk(out)
        info[split] = {
            "source": str(path),
            "spacy": str(out),
            "limit": limit,
            "docs": len(docs),
            "words": sum(len(d) for d in docs),
            "entities": sum(len(d.ents) for d in docs),
        }
        log(
            f"Converted {path} -> {out}: {len(docs):,} docs, {info[split]['words']:,} words, "
            f"{info[split]['entities']:,} entities ({timer() - started:.1f}s)"
        )
    return info
