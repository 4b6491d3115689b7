"""Regenerate the fixed train/dev/test split of the WikiGold corpus.

The split is by article: the 145 article indices (in source order) are
shuffled with `random.Random(0).shuffle`, the first 70 % (rounded down) go to
train and the rest is halved between dev and test (dev gets the extra article
when the remainder is odd). Each split file is the concatenation of its
articles' blocks exactly as they appear in the source, in source order, so
the three files are byte-for-byte subsets of `wikigold.conll.txt` and
together they contain every byte of it.

Usage (from the repository root):

    python scripts/split_wikigold.py                  # write assets/wikigold/*.conll
    python scripts/split_wikigold.py --check          # only compare with the committed files
    python scripts/split_wikigold.py SOURCE -o DIR    # other source path / output folder

The script has no dependencies beyond the standard library. It prints the
article indices of each split and a table of counts (articles, sentences,
tokens and entities per type), as used in assets/wikigold/README.md.
"""

import argparse
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, List

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "wikigold" / "wikigold.conll.txt"
DEFAULT_OUTPUT = REPO_ROOT / "assets" / "wikigold"
SEED = 0
TRAIN_FRACTION = 0.70
SPLITS = ("train", "dev", "test")
LABELS = ("LOC", "ORG", "PER", "MISC")


def split_articles(text: str) -> List[str]:
    """Cut the source text into article blocks.

    A `-DOCSTART-` line ends an article; the blank line that follows it is
    kept with the article it ends, so that "".join(blocks) == text.
    """
    blocks: List[str] = []
    current: List[str] = []
    pending_close = False
    for line in text.splitlines(keepends=True):
        if pending_close:
            pending_close = False
            if not line.strip():
                current.append(line)
                blocks.append("".join(current))
                current = []
                continue
            blocks.append("".join(current))
            current = []
        current.append(line)
        fields = line.split()
        if fields and fields[0] == "-DOCSTART-":
            pending_close = True
    if current:
        if any(line.strip() for line in current) and not pending_close:
            raise ValueError("the source does not end with a -DOCSTART- line")
        blocks.append("".join(current))
    assert "".join(blocks) == text
    return blocks


def assign_splits(n_articles: int, seed: int = SEED) -> Dict[str, List[int]]:
    """Seeded shuffle of the article indices, cut 70/15/15, each split sorted."""
    indices = list(range(n_articles))
    random.Random(seed).shuffle(indices)
    n_train = int(n_articles * TRAIN_FRACTION)
    n_test = (n_articles - n_train) // 2
    n_dev = n_articles - n_train - n_test
    return {
        "train": sorted(indices[:n_train]),
        "dev": sorted(indices[n_train : n_train + n_dev]),
        "test": sorted(indices[n_train + n_dev :]),
    }


def count(text: str) -> Dict[str, int]:
    """Count articles, sentences, tokens and entities (IO/IOB1/IOB2 tags)."""
    counts: Counter = Counter()
    in_sentence = False
    prev_tag = "O"
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if in_sentence:
                counts["sentences"] += 1
            if fields:
                counts["articles"] += 1
            in_sentence = False
            prev_tag = "O"
            continue
        in_sentence = True
        counts["tokens"] += 1
        tag = fields[-1]
        if tag != "O" and (tag.startswith("B-") or tag[2:] != prev_tag[2:]):
            counts[tag[2:]] += 1
            counts["entities"] += 1
        prev_tag = tag
    if in_sentence:
        counts["sentences"] += 1
    return dict(counts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--check",
        action="store_true",
        help="don't write: exit 1 unless the files in OUTPUT equal the regenerated split",
    )
    args = parser.parse_args()

    if not args.source.exists():
        print(f"Source not found: {args.source}", file=sys.stderr)
        return 1
    # decode the bytes directly (no newline translation), so output == input bytes
    text = args.source.read_bytes().decode("utf-8")
    blocks = split_articles(text)
    assignment = assign_splits(len(blocks))
    contents = {name: "".join(blocks[i] for i in assignment[name]) for name in SPLITS}
    ok = True
    for name in SPLITS:
        path = args.output / f"{name}.conll"
        if args.check:
            same = path.exists() and path.read_bytes() == contents[name].encode("utf-8")
            print(f"{path}: {'OK' if same else 'DIFFERS'}")
            ok = ok and same
        else:
            args.output.mkdir(parents=True, exist_ok=True)
            path.write_bytes(contents[name].encode("utf-8"))
            print(f"Wrote {path}")
    print(f"\n{len(blocks)} articles; seed {SEED}")
    for name in SPLITS:
        print(f"{name} ({len(assignment[name])}): {assignment[name]}")
    header = ["split", "articles", "sentences", "tokens", "entities", *LABELS]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for name, part in [*contents.items(), ("total", text)]:
        c = count(part)
        row = [name] + [f"{c.get(key, 0):,}" for key in header[1:]]
        print("| " + " | ".join(row) + " |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
