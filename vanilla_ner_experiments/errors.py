"""Where a trained NER pipeline's errors are: how well it fits its training data, and its dev
scores on entities whose surface form it saw in training against those it did not (as in
Augenstein et al. 2017, "Generalisation in named entity recognition")."""

from typing import Any, Dict, Iterable, List, Set, Tuple

Form = Tuple[str, str]


def entity_spans(docs: Iterable[Any]) -> List[Set[Tuple[int, int, str]]]:
    """Per doc, its entities as (start token, end token, label)."""
    return [{(e.start, e.end, e.label_) for e in doc.ents} for doc in docs]


def surface_forms(docs: Iterable[Any]) -> Set[Form]:
    """Every (text, label) that is an entity somewhere in the docs."""
    return {(e.text, e.label_) for doc in docs for e in doc.ents}


def seen_unseen_prf(
    pred_docs: List[Any], gold_docs: List[Any], seen: Set[Form]
) -> Dict[str, Dict[str, Any]]:
    """Exact-span P/R/F over all entities, and apart for those whose (text, label) is in
    `seen` and those whose is not. A gold entity counts for its own form, a predicted one for
    the form it predicts, so precision on "unseen" is over the predictions of unseen forms.
    Predicted docs may be tokenized differently from the gold ones: each predicted entity is
    mapped onto the gold tokens it covers and counted as spaCy's NER scorer
    (`spacy.scorer.get_ner_prf`) counts it, so "all" is the dev F1 of `spacy evaluate`."""
    from spacy.scorer import PRFScore
    from spacy.training import Example

    if len(pred_docs) != len(gold_docs):
        raise ValueError(f"{len(pred_docs)} predicted docs for {len(gold_docs)} gold docs")
    keep = {"all": lambda form: True, "seen": seen.__contains__}
    keep["unseen"] = lambda form: form not in seen
    scores = {name: PRFScore() for name in keep}
    for pred, gold in zip(pred_docs, gold_docs):
        golds = {
            name: {s for s in entity_spans([gold])[0] if wanted(_form(gold, s))}
            for name, wanted in keep.items()
        }
        x2y = Example(pred, gold).alignment.x2y
        for ent in pred.ents:
            indices = x2y[ent.start : ent.end]
            # As get_ner_prf: a prediction over gold tokens without annotation is ignored.
            if not len(indices) or any(t.ent_iob == 0 for t in gold[indices[0] : indices[-1] + 1]):
                continue
            span = (int(indices[0]), int(indices[-1]) + 1, ent.label_)
            for name, wanted in keep.items():
                if not wanted(_form(gold, span)):
                    continue
                if span in golds[name]:
                    scores[name].tp += 1
                    golds[name].remove(span)
                else:
                    scores[name].fp += 1
        for name in keep:
            scores[name].fn += len(golds[name])
    return {
        name: {
            "ents_p": score.precision,
            "ents_r": score.recall,
            "ents_f": score.fscore,
            "gold": score.tp + score.fn,
            "pred": score.tp + score.fp,
        }
        for name, score in scores.items()
    }


def _form(doc: Any, span: Tuple[int, int, str]) -> Form:
    start, end, label = span
    return (doc[start:end].text, label)
