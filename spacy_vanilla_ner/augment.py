"""`spacy-vanilla-ner.MentionReplace.v1`: a training-data augmenter that replaces gold entity
mentions with other mentions of the same label (Dai & Adel 2020, "An Analysis of Simple Data
Augmentation for Named Entity Recognition", mention replacement).

Each gold entity of a training example is, with probability `rate`, replaced by a mention of
the same label drawn uniformly from the mentions the augmenter has read so far (a reservoir of
at most `pool_size` per label, so a large corpus costs bounded memory). The sentence around it
is kept, so the model sees its contexts with names that did not occur there: it cannot tag a
context by remembering the name in it.

spaCy runs `[corpora.train.augmenter]` once per read of the corpus. With `[training]
max_epochs >= 0` the training loop reads the corpus once and reuses the list, so the draws
would be frozen for the whole run. To draw anew at every pass, set `max_epochs = -1` (the
corpus is read again for each pass) and read it with `spacy-vanilla-ner.ShuffledCorpus.v1`
(spaCy's `spacy.Corpus.v1` with the shuffling that spaCy's loop does only for corpora it keeps
in memory). The mention pool fills as the first pass reads the corpus.

Token annotations that belong to one token (tags, POS, morphology, lemmas, sentence starts,
entity IOB, type and KB id) move with their tokens. Dependency parses and span groups cannot
be spliced without breaking them: examples that have them are passed through unchanged (with
one warning).
"""

import random
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy
from spacy.attrs import ENT_IOB, ENT_KB_ID, ENT_TYPE, LEMMA, MORPH, POS, SENT_START, TAG
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Corpus, Example
from spacy.util import registry

# The token attributes that travel with a token when a mention is spliced in.
SPLICED_ATTRS = [TAG, POS, MORPH, LEMMA, SENT_START, ENT_IOB, ENT_TYPE, ENT_KB_ID]

SENT_COL = SPLICED_ATTRS.index(SENT_START)
_NOT_START = numpy.array([-1], dtype=numpy.int64).astype(numpy.uint64)[0]

# (words, spaces, attribute rows) of one mention; its last space is the context's, not its own.
Mention = Tuple[Tuple[str, ...], Tuple[bool, ...], numpy.ndarray]


@registry.readers("spacy-vanilla-ner.ShuffledCorpus.v1")
def create_shuffled_corpus(
    path: Optional[Path],
    gold_preproc: bool = False,
    max_length: int = 0,
    limit: int = 0,
    augmenter: Optional[Callable[[Language, Example], Iterator[Example]]] = None,
) -> Corpus:
    """`spacy.Corpus.v1` that shuffles its documents at every read: for `[training]
    max_epochs = -1`, where spaCy reads the corpus again for every pass and does not shuffle.
    """
    if path is None:
        raise ValueError(
            "spacy-vanilla-ner.ShuffledCorpus.v1: path is null. Set it to a .spacy file or a "
            "directory of them, e.g. with --paths.train corpus/train.spacy."
        )
    return Corpus(
        path,
        gold_preproc=gold_preproc,
        max_length=max_length,
        limit=limit,
        augmenter=augmenter,
        shuffle=True,
    )


@registry.augmenters("spacy-vanilla-ner.MentionReplace.v1")
def create_mention_replace_augmenter(
    rate: float = 0.2,
    labels: Optional[List[str]] = None,
    pool_size: int = 100000,
) -> Callable[[Language, Example], Iterator[Example]]:
    """Replace each gold entity mention, with probability `rate`, by a mention of the same label
    read earlier from the training corpus.

    rate (float): the probability that a given mention is replaced, in [0, 1].
    labels (Optional[List[str]]): replace only mentions of these labels; None: every label.
    pool_size (int): the most mentions kept per label (a uniform sample of those read).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(
            f"spacy-vanilla-ner.MentionReplace.v1: rate must be in [0, 1], got {rate!r}. "
            "It is the probability that one mention is replaced; 0.2 is a good start."
        )
    if pool_size < 1:
        raise ValueError(
            f"spacy-vanilla-ner.MentionReplace.v1: pool_size must be at least 1, got {pool_size!r}."
        )
    return MentionReplacer(rate=rate, labels=labels, pool_size=pool_size)


class MentionReplacer:
    """The augmenter: a callable `(nlp, example) -> Iterator[Example]` with its mention pool.

    Random draws use Python's `random` module, which spaCy's training seeds (`[system] seed`).
    """

    def __init__(self, *, rate: float, labels: Optional[Sequence[str]], pool_size: int) -> None:
        self.rate = rate
        self.labels = None if labels is None else set(labels)
        self.pool_size = pool_size
        self.pool: Dict[str, List[Mention]] = {}
        self.seen: Dict[str, int] = {}
        self._warned = False

    def __call__(self, nlp: Language, example: Example) -> Iterator[Example]:
        reference = example.reference
        ents = [e for e in reference.ents if self.labels is None or e.label_ in self.labels]
        if not ents:
            yield example
            return
        if reference.has_annotation("DEP") or len(reference.spans):
            if not self._warned:
                warnings.warn(
                    "spacy-vanilla-ner.MentionReplace.v1: examples with a dependency parse or "
                    "span groups are passed through unchanged (a spliced mention would break "
                    "them). Train NER from a corpus without them to augment every example.",
                    stacklevel=2,
                )
                self._warned = True
            yield example
            return
        # Draw the replacements from the pool as it was before this example, then add its
        # mentions: a mention is never replaced by itself only because it was just read.
        choices: List[Tuple[Span, Mention]] = []
        for ent in ents:
            pool = self.pool.get(ent.label_)
            if pool and random.random() < self.rate:
                choices.append((ent, pool[random.randrange(len(pool))]))
        for ent in ents:
            self._remember(ent)
        if not choices:
            yield example
            return
        yield self._splice(nlp, example, choices)

    def _remember(self, ent: Span) -> None:
        """Keep `ent` in its label's pool (reservoir sampling beyond `pool_size`)."""
        label = ent.label_
        seen = self.seen.get(label, 0) + 1
        self.seen[label] = seen
        pool = self.pool.setdefault(label, [])
        if len(pool) < self.pool_size:
            pool.append(_mention(ent))
        else:
            slot = random.randrange(seen)
            if slot < self.pool_size:
                pool[slot] = _mention(ent)

    def _splice(
        self, nlp: Language, example: Example, choices: List[Tuple[Span, Mention]]
    ) -> Example:
        reference = example.reference
        full = reference.to_array(SPLICED_ATTRS)
        # to_array writes "not a sentence start" as -1 in unsigned 64 bits
        inner = full.dtype.type(_NOT_START) if reference.has_annotation("SENT_START") else 0
        words: List[str] = []
        spaces: List[bool] = []
        rows: List[numpy.ndarray] = []
        start = 0
        for ent, (m_words, m_spaces, m_rows) in choices:
            words.extend(t.text for t in reference[start : ent.start])
            spaces.extend(bool(t.whitespace_) for t in reference[start : ent.start])
            rows.append(full[start : ent.start])
            words.extend(m_words)
            # The mention's inner spaces are its own; the one after it is the context's.
            spaces.extend(m_spaces[:-1] + (bool(reference[ent.end - 1].whitespace_),))
            m_rows = m_rows.astype(full.dtype)
            # Sentence boundaries are the context's: the first token keeps the replaced
            # mention's value, the others are inside a sentence (or unknown, as before).
            m_rows[0, SENT_COL] = full[ent.start, SENT_COL]
            m_rows[1:, SENT_COL] = full[ent.start + 1, SENT_COL] if len(ent) > 1 else inner
            rows.append(m_rows)
            start = ent.end
        words.extend(t.text for t in reference[start:])
        spaces.extend(bool(t.whitespace_) for t in reference[start:])
        rows.append(full[start:])
        doc = Doc(nlp.vocab, words=words, spaces=spaces)
        doc.from_array(SPLICED_ATTRS, numpy.concatenate(rows).astype(full.dtype))
        doc.cats = dict(reference.cats)
        if [t.text for t in example.predicted] == [t.text for t in reference]:
            predicted = Doc(nlp.vocab, words=words, spaces=spaces)
        else:
            predicted = nlp.make_doc(doc.text)
        return Example(predicted, doc)


def _mention(ent: Span) -> Mention:
    words = tuple(t.text for t in ent)
    spaces = tuple(bool(t.whitespace_) for t in ent)
    rows = ent.doc.to_array(SPLICED_ATTRS)[ent.start : ent.end].copy()
    return words, spaces, rows
