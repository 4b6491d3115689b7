"""NER checks of training data for `vanilla_ner`.

`spacy debug data` runs its NER checks only for a component made by the factory
`ner`, so it says nothing about `vanilla_ner`. This module runs the same kind of
checks, plus the BILUO rules of `vanilla_ner`, on `.spacy` corpora:

    python -m spacy_vanilla_ner debug-data CONFIG --paths.train TRAIN --paths.dev DEV
    python -m spacy_vanilla_ner debug-data TRAIN [DEV] [--lang en]

(or `python -m spacy_vanilla_ner.debug_data ...`). A corpus that is not a `.spacy`
DocBin (e.g. a CoNLL file: `convert` it first), a directory without `.spacy` files
or an unreadable `.spacy` file fails at once, with one message that says what to do.

With a config, the corpora and the tokenizer are the ones `spacy train` would
use ([corpora], [training] train_corpus/dev_corpus, [nlp] lang and tokenizer);
with paths, the corpora are read with `spacy.training.Corpus` and re-tokenized by
`spacy.blank(lang)`. Either way the gold entities are aligned to the tokenizer's
tokens as in training (`Example.get_aligned_ner`), and the checks are:

- errors (exit code 1): an empty corpus, no entities in train, entities that
  start or end on a whitespace token, aligned gold tags that break the BILUO rules
  of `vanilla_ner` (the decoder can never output them);
- warnings: dev labels not seen in train, no entities in dev, labels with few
  examples, entities lost in alignment (not on the tokenizer's token boundaries),
  misaligned tokens, entities crossing sentence boundaries, dev texts also in train;
- information: docs, tokens, entities per label, docs without entities, missing
  values (tokens with no gold tag after alignment).
"""

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import spacy
import typer
from spacy import util
from spacy.cli._util import parse_config_overrides  # the parser of `spacy train`
from spacy.language import Language
from spacy.training import Corpus, Example
from wasabi import msg

from .corpus_files import corpus_files, fail, read_docbin
from .tagging import biluo

__all__ = [
    "CorpusStats",
    "Finding",
    "Report",
    "analyze",
    "check",
    "debug_data",
    "first_invalid",
    "load_from_config",
    "read_corpus",
]

# Fewer training examples of a label than this is a warning (as `spacy debug data`).
LOW_LABEL_COUNT = 50
# Examples shown per finding with --verbose.
MAX_EXAMPLES = 5
MISSING = (None, "", "-")


@dataclass
class CorpusStats:
    """What `analyze` counts in one corpus. Problem lists hold one readable line
    per case ("doc 3, tokens 4-6 'New York' (LOC): ...")."""

    name: str
    n_docs: int = 0
    n_tokens: int = 0
    n_docs_without_ents: int = 0
    n_docs_unannotated: int = 0
    n_missing: int = 0
    labels: Counter = field(default_factory=Counter)
    texts: Set[str] = field(default_factory=set)
    misaligned_tokens: List[str] = field(default_factory=list)
    lost_ents: List[str] = field(default_factory=list)
    whitespace_ents: List[str] = field(default_factory=list)
    cross_sentence_ents: List[str] = field(default_factory=list)
    invalid_biluo: List[str] = field(default_factory=list)

    @property
    def n_ents(self) -> int:
        return sum(self.labels.values())


@dataclass
class Finding:
    level: str  # "error", "warning" or "good"
    message: str
    examples: List[str] = field(default_factory=list)


@dataclass
class Report:
    train: CorpusStats
    dev: Optional[CorpusStats]
    findings: List[Finding]

    def count(self, level: str) -> int:
        return sum(1 for f in self.findings if f.level == level)


def first_invalid(tags: Sequence[Optional[str]], is_space: Sequence[bool]) -> Optional[int]:
    """Where a BILUO tag sequence first breaks the rules of `vanilla_ner`
    (`spacy_vanilla_ner.tagging.biluo`): B/I/L/U order, start and end of the doc,
    and no B, L or U on a whitespace token.

    tags (Sequence[Optional[str]]): One tag per token, e.g. from
        `Example.get_aligned_ner()`; None, "" and "-" are missing values, and only
        the transitions between two known neighbours are checked.
    is_space (Sequence[bool]): Whether each token is whitespace.
    RETURNS (Optional[int]): The index of the first token that breaks a rule, or
        None if the sequence is valid.
    """
    labels = sorted({t[2:] for t in tags if t not in MISSING and t != "O"})
    index = {name: i for i, name in enumerate(biluo.tag_names(labels))}
    allowed, allowed_start, allowed_end = biluo.transition_mask(len(labels))
    allowed_on_space = biluo.whitespace_mask(len(labels))
    ids = [None if t in MISSING else index.get(t, -1) for t in tags]
    for i, tag in enumerate(ids):
        if tag is None:
            continue
        if tag == -1:  # not a BILUO tag at all
            return i
        prev = ids[i - 1] if i > 0 else None
        if (
            (is_space[i] and not allowed_on_space[tag])
            or (i == 0 and not allowed_start[tag])
            or (prev is not None and not allowed[prev, tag])
            or (i == len(ids) - 1 and not allowed_end[tag])
        ):
            return i
    return None


def _where(i: int, start: int, end: int, text: str, label: str = "") -> str:
    tokens = f"token {start}" if end - start == 1 else f"tokens {start}-{end - 1}"
    return f"doc {i}, {tokens} {text!r}" + (f" ({label})" if label else "")


def analyze(examples: Iterable[Example], name: str) -> CorpusStats:
    """Count labels and find annotation problems in one corpus.

    examples (Iterable[Example]): The corpus, gold docs as `reference` and the
        tokenizer's docs as `predicted` (as `spacy.training.Corpus` yields them).
    name (str): The corpus name in messages, e.g. "train".
    RETURNS (CorpusStats): The counts and problems.
    """
    stats = CorpusStats(name)
    for i, eg in enumerate(examples):
        gold, doc = eg.reference, eg.predicted
        stats.n_docs += 1
        stats.n_tokens += len(gold)
        stats.texts.add(gold.text)
        stats.labels.update(ent.label_ for ent in gold.ents)
        if not gold.ents:
            stats.n_docs_without_ents += 1
        if not gold.has_annotation("ENT_IOB"):
            stats.n_docs_unannotated += 1
        lengths = eg.alignment.x2y.lengths
        for token in doc:
            if not token.is_space and lengths[token.i] != 1:
                stats.misaligned_tokens.append(
                    _where(i, token.i, token.i + 1, token.text) + " in the tokenizer's doc"
                )
        has_sents = gold.has_annotation("SENT_START")
        for ent in gold.ents:
            where = _where(i, ent.start, ent.end, ent.text, ent.label_)
            if ent[0].is_space or ent[-1].is_space:
                stats.whitespace_ents.append(where)
            if has_sents and any(token.is_sent_start for token in ent[1:]):
                stats.cross_sentence_ents.append(where)
            if not eg.get_aligned_spans_y2x([ent]):
                stats.lost_ents.append(where)
        tags = eg.get_aligned_ner()
        stats.n_missing += sum(1 for tag in tags if tag in MISSING)
        bad = first_invalid(tags, [token.is_space for token in doc])
        if bad is not None:
            around = " ".join(str(tag) for tag in tags[max(0, bad - 2) : bad + 3])
            stats.invalid_biluo.append(
                f"{_where(i, bad, bad + 1, doc[bad].text)}: tag {tags[bad]} (tags around "
                f"it: {around})"
            )
    return stats


def _labels(counts: Dict[str, int]) -> str:
    return ", ".join(f"{label} ({n:,})" for label, n in sorted(counts.items()))


def check(train: CorpusStats, dev: Optional[CorpusStats] = None) -> List[Finding]:
    """Turn corpus statistics into findings: errors, warnings and checks passed.

    train (CorpusStats): The training corpus, from `analyze`.
    dev (Optional[CorpusStats]): The development corpus, if any.
    RETURNS (List[Finding]): The findings, in the order to print them.
    """
    out: List[Finding] = []

    def add(ok: bool, good: str, level: str, bad: str, examples: Sequence[str] = ()) -> None:
        if ok:
            out.append(Finding("good", good))
        else:
            out.append(Finding(level, bad, list(examples[:MAX_EXAMPLES])))

    corpora = [c for c in (train, dev) if c is not None]
    for c in corpora:
        add(c.n_docs > 0, f"{c.name}: {c.n_docs:,} docs", "error", f"{c.name}: no docs")
    add(train.n_ents > 0, f"train: {train.n_ents:,} entities", "error", "train: no entities")
    if dev is not None and dev.n_docs:
        no_ents = "dev: no entities, so its entity scores mean nothing"
        add(dev.n_ents > 0, f"dev: {dev.n_ents:,} entities", "warning", no_ents)
        unseen = {label: n for label, n in dev.labels.items() if label not in train.labels}
        unseen_msg = f"dev labels not in train, never predicted: {_labels(unseen)}"
        add(not unseen, "every dev label is in train", "warning", unseen_msg)
        overlap = len(dev.texts & train.texts)
        overlap_msg = f"{overlap:,} dev texts are also in train"
        add(not overlap, "no dev text is also in train", "warning", overlap_msg)
    low = {label: n for label, n in train.labels.items() if n < LOW_LABEL_COUNT}
    low_msg = f"few train entities (< {LOW_LABEL_COUNT}) for: {_labels(low)}"
    add(not low, f"every train label has {LOW_LABEL_COUNT}+ entities", "warning", low_msg)
    for c in corpora:
        # (problems, level, passed, failed), the count of problems goes before `failed`
        checks = [
            (c.whitespace_ents, "error", "no entity starts or ends on whitespace",
             "entities start or end on a whitespace token"),
            (c.invalid_biluo, "error", "aligned gold tags follow the BILUO rules",
             "docs have aligned gold tags that break the BILUO rules of vanilla_ner, "
             "which it can never predict"),
            (c.lost_ents, "warning", "every entity aligns to the tokenizer's tokens",
             "entities do not fall on the tokenizer's token boundaries; training "
             "treats their tokens as missing"),
            (c.misaligned_tokens, "warning", "tokens align one-to-one",
             "tokens of the tokenizer do not match exactly one gold token"),
            (c.cross_sentence_ents, "warning", "no entity crosses a sentence boundary",
             "entities cross a sentence boundary"),
        ]  # fmt: skip
        for problems, level, passed, failed in checks:
            message = f"{c.name}: {len(problems):,} {failed}"
            add(not problems, f"{c.name}: {passed}", level, message, problems)
    return out


def debug_data(train: Iterable[Example], dev: Optional[Iterable[Example]] = None) -> Report:
    """Analyze and check a training and (optionally) a development corpus.

    train (Iterable[Example]): The training corpus.
    dev (Optional[Iterable[Example]]): The development corpus.
    RETURNS (Report): The statistics of both corpora and the findings.
    """
    train_stats = analyze(train, "train")
    dev_stats = analyze(dev, "dev") if dev is not None else None
    return Report(train_stats, dev_stats, check(train_stats, dev_stats))


def _check_corpus(path: Path, role: str) -> None:
    """Raise a ValueError (CorpusFileError) that says what to do unless `spacy train`
    can read the corpus: a missing path, a file that is not a `.spacy` DocBin, a
    directory without `.spacy` files, an unreadable `.spacy` file."""
    for file in corpus_files(path, role):
        read_docbin(file)


def read_corpus(path: Path, nlp: Language, role: str = "train") -> List[Example]:
    """Read a `.spacy` file or directory as `spacy train` does, re-tokenized by `nlp`.
    Raises ValueError if the path does not exist or is not a readable `.spacy`
    corpus (a CoNLL file, a directory without `.spacy` files); `role` ("train" or
    "dev") names the corpus in the message."""
    _check_corpus(Path(path), role)
    return list(Corpus(path)(nlp))


def load_from_config(
    config_path: Path, overrides: Dict[str, object]
) -> Tuple[List[Example], List[Example]]:
    """Read the train and dev corpora of a training config, tokenized by its [nlp]
    language and tokenizer, without building the pipeline. Raises ValueError if a
    corpus is not set, not found or not a readable `.spacy` corpus."""
    config = util.load_config(config_path, overrides=overrides, interpolate=True)
    nlp_config = {"lang": config["nlp"]["lang"], "tokenizer": config["nlp"]["tokenizer"]}
    nlp = util.get_lang_class(nlp_config["lang"]).from_config({"nlp": nlp_config})
    training = config.get("training", {})
    names = [training.get(f"{name}_corpus", f"corpora.{name}") for name in ("train", "dev")]
    try:
        corpora = util.resolve_dot_names(config, names)
    except ValueError as e:  # includes confection's ConfigValidationError
        hint = "pass --paths.train and --paths.dev?"
        raise ValueError(f"Cannot read the corpora of {config_path} ({hint}): {e}") from None
    out = []
    for role, corpus in zip(("train", "dev"), corpora):
        path = getattr(corpus, "path", None)
        if path is not None:
            _check_corpus(Path(path), role)
        out.append(list(corpus(nlp)))
    return out[0], out[1]


def print_report(report: Report, verbose: bool = False) -> None:
    corpora = [c for c in (report.train, report.dev) if c is not None]
    msg.divider("Corpora")
    for c in corpora:
        unannotated = c.n_docs_unannotated
        msg.info(
            f"{c.name}: {c.n_docs:,} docs, {c.n_tokens:,} tokens, {c.n_ents:,} entities; "
            f"{c.n_docs_without_ents:,} docs without entities"
            + (f" ({unannotated:,} with no NER annotation)" if unannotated else "")
        )
        msg.text(f"{c.name} labels: {_labels(c.labels) or '(none)'}")
        msg.text(f"{c.name}: {c.n_missing:,} missing values (tokens with no gold tag)")
    msg.divider("Named Entity Recognition (vanilla_ner)")
    printers = {"good": msg.good, "warning": msg.warn, "error": msg.fail}
    for finding in report.findings:
        printers[finding.level](finding.message)
        if verbose:
            for example in finding.examples:
                msg.text(f"  {example}")
    msg.divider("Summary")
    msg.good(f"{report.count('good')} checks passed")
    if report.count("warning"):
        msg.warn(f"{report.count('warning')} warnings")
    if report.count("error"):
        msg.fail(f"{report.count('error')} errors")
    if not verbose and any(f.examples for f in report.findings):
        msg.text("Run with --verbose to see examples of each problem.")


app = typer.Typer(add_completion=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def main(
    ctx: typer.Context,
    path: Path = typer.Argument(
        ...,
        metavar="PATH",
        help="Training config (.cfg), or the training corpus (.spacy file or directory)",
    ),
    lang: str = typer.Option("en", "--lang", help="Tokenizer language, when PATH is a corpus"),
    verbose: bool = typer.Option(False, "--verbose", "-V", help="Show examples of problems"),
) -> None:
    """Check NER training data for vanilla_ner: label counts, entities per label,
    entities on whitespace or across sentences, BILUO validity after alignment to
    the tokenizer, labels in dev not seen in train. Exits with 1 on errors.

    PATH is a training config followed by its overrides as in `spacy train`
    (--paths.train corpus/train.spacy --paths.dev corpus/dev.spacy), or a training
    corpus optionally followed by a development corpus (TRAIN.spacy DEV.spacy)."""
    if not path.exists():
        msg.fail(f"Not found: {path}", exits=1)
    # The dev corpus comes as an extra argument: a second, optional positional
    # argument would swallow the values of config overrides.
    is_config = path.suffix in (".cfg", ".ini")
    if not is_config and (len(ctx.args) > 1 or any(a.startswith("-") for a in ctx.args)):
        msg.fail(f"Unexpected {ctx.args}: expected TRAIN [DEV] (overrides need a config)", exits=1)
    try:
        if is_config:
            train, dev = load_from_config(path, parse_config_overrides(ctx.args))
        else:
            nlp = spacy.blank(lang)
            train = read_corpus(path, nlp, "train")
            dev = read_corpus(Path(ctx.args[0]), nlp, "dev") if ctx.args else None
    except ValueError as e:
        fail(e)
    report = debug_data(train, dev)
    print_report(report, verbose=verbose)
    if report.count("error"):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
