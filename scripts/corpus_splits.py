"""Remember which files `convert` made the corpus from, so that `evaluate-test` never scores a
model trained on your data against a test split that does not belong with it.

    python scripts/corpus_splits.py record TRAIN DEV    (in `convert`: writes corpus/splits.json)
    python scripts/corpus_splits.py check TEST          (in `evaluate-test`)

The project's `test` variable defaults to the shipped WikiGold test split. A model trained on
your own train and dev files and scored on WikiGold's test split would report a number about
WikiGold, not about your data: `check` exits with 1 and says to pass --vars.test. It also
refuses a test file that is the train or dev file itself. It reads what `convert` recorded, not
the variables of the `evaluate-test` call, which may differ from those of `convert`.
"""

import json
import sys
from pathlib import Path
from typing import Dict

from wasabi import msg

REPO = Path(__file__).resolve().parent.parent
SHIPPED = {"train": REPO / "assets/wikigold/train.conll", "dev": REPO / "assets/wikigold/dev.conll"}
SHIPPED_TEST = REPO / "assets/wikigold/test.conll"
RECORD = Path("corpus/splits.json")
USAGE = "python scripts/corpus_splits.py record TRAIN DEV | check TEST"


def record(train: Path, dev: Path, path: Path = RECORD) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    splits = {"train": str(train.resolve()), "dev": str(dev.resolve())}
    path.write_text(json.dumps(splits, indent=2) + "\n", encoding="utf8")


def check(test: Path, path: Path = RECORD) -> None:
    """Exit with a message naming the fix when `test` is not a held-out split that belongs
    with the recorded train and dev files."""
    if not path.exists():
        msg.fail(f"{path} not found", "Run `spacy project run convert` first", exits=1)
    splits: Dict[str, str] = json.loads(path.read_text(encoding="utf8"))
    test = test.resolve()
    fix = "Pass your own held-out test file: spacy project run evaluate-test . --vars.test PATH"
    for name, source in splits.items():
        if test == Path(source):
            msg.fail(f"The test file is the {name} file of the corpus ({source})", fix, exits=1)
    own = [source for name, source in splits.items() if Path(source) != SHIPPED[name].resolve()]
    if test == SHIPPED_TEST.resolve() and own:
        msg.fail(
            f"The test file is the shipped WikiGold test split, but the corpus was converted "
            f"from your own files ({', '.join(own)})",
            f"A score on WikiGold's test split says nothing about your data. {fix}",
            exits=1,
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["record"] and len(args) == 3:
        record(Path(args[1]), Path(args[2]))
    elif args[:1] == ["check"] and len(args) == 2:
        check(Path(args[1]))
    else:
        msg.fail(f"Usage: {USAGE}", exits=2)
