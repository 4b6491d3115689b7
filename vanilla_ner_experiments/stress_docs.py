"""Generated text streams for the reliability stress runs (`benchmarks/stress.py`,
`benchmarks/memory_retention.py`): real sentences mixed with pathological docs (empty,
whitespace-only, 5,000-character tokens, naughty strings, emoji, right-to-left and invisible
characters, very long docs)."""

import random
import string
from typing import Iterator, List, Sequence, Tuple

KINDS = ("empty", "whitespace", "long_token", "naughty", "unicode")
# Used when spaCy's own test suite (which has the full list) is not installed.
NAUGHTY_FALLBACK = [
    r",./;'[]\-=",
    r'<>?:"{}|_+',
    "\u00ad\u0600\u0601\u0602\u0603\u0604\u0605\u061c\u06dd\u070f\u180e"
    "\u200b\u200c\u200d\u200e\u200f\u202a",
    "\ufffe",
    "Ω≈ç√∫˜µ≤≥÷",
    "田中さんにあげて下さい",
    "٠١٢٣٤٥٦٧٨٩",
    "𝐓𝐡𝐞 𝐪𝐮𝐢𝐜𝐤 𝐛𝐫𝐨𝐰𝐧 𝐟𝐨𝐱",
    "<script>alert(123)</script>",
    "' OR 1=1 -- 1",
    "%d %s %x %n",
    "\u202eRTL override",
]
EMOJI = ["😀", "👩‍👩‍👧‍👦", "🇬🇧", "👍🏽", "🎉", "🤖", "❤️"]
RTL = ["مرحبا بكم في القاهرة", "שלום ירושלים", "\u202bعربي\u202c", "محمد صلاح"]
INVISIBLE = ["\x00", "\u200b", "\u200c", "\u200d", "\ufeff", "\u2060"]


def naughty_strings() -> List[str]:
    try:
        from spacy.tests.tokenizer.test_naughty_strings import NAUGHTY_STRINGS

        return list(NAUGHTY_STRINGS)
    except ImportError:
        return list(NAUGHTY_FALLBACK)


def generate_docs(n_docs: int, seed: int, sentences: Sequence[str]) -> Iterator[Tuple[str, str]]:
    """Yield (kind, text): about 92 % runs of 1-3 consecutive `sentences` (some with a unique
    ID token, as real streams have), the rest pathological (`KINDS`), and every 500th doc
    3,000-8,000 tokens long."""
    rng = random.Random(seed)
    naughty = naughty_strings()

    def sentence() -> str:
        start = rng.randrange(len(sentences))
        return " ".join(sentences[start : start + rng.randint(1, 3)])

    def random_token(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    kinds = list(KINDS)
    for i in range(n_docs):
        r = rng.random()
        if i % 500 == 499:
            # Very long: 3,000-8,000 tokens of running text.
            text, n = [], rng.randint(3_000, 8_000)
            while sum(len(t.split()) for t in text) < n:
                text.append(sentence())
            yield "very_long", " ".join(text)
        elif r < 0.075:
            kind = kinds[i % len(kinds)]
            if kind == "empty":
                yield kind, ""
            elif kind == "whitespace":
                yield (
                    kind,
                    "".join(rng.choice(" \t\n\r\u00a0\u2003") for _ in range(rng.randint(1, 40))),
                )
            elif kind == "long_token":
                token = rng.choice(
                    [
                        "https://example.com/?q=" + random_token(4_977),
                        random_token(5_000, string.ascii_letters + string.digits + "+/"),
                        "x" * 5_000,
                    ]
                )
                yield kind, rng.choice([token, f"{sentence()} {token} {sentence()}"])
            elif kind == "naughty":
                s = rng.choice(naughty)
                yield kind, rng.choice([s, f"{s} {sentence()} {s}"])
            else:
                words = sentence().split()
                for _ in range(rng.randint(1, 6)):
                    pos = rng.randint(0, len(words))
                    extra = rng.choice([rng.choice(EMOJI), rng.choice(RTL), rng.choice(INVISIBLE)])
                    if rng.random() < 0.5 and words:  # glued to a word
                        pos = min(pos, len(words) - 1)
                        words[pos] = words[pos] + extra
                    else:
                        words.insert(pos, extra)
                yield kind, " ".join(words)
        elif r < 0.35:
            yield "normal", f"{sentence()} (ref {random_token(10)})"
        else:
            yield "normal", sentence()
