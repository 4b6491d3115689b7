"""Experiment code of spacy-vanilla-ner: what `scripts/` and `benchmarks/` import to train,
compare and diagnose NER systems. Never imported by `spacy_vanilla_ner` (the runtime package
that `spacy.load` needs).

- `budget`: the one training loop: a spaCy config under a budget (seconds, steps or
  converged), evaluated on dev, best checkpoint kept, curves recorded; its rules in `RULES`.
- `runner`: one run per system and seed (train, then time inference and score a test file).
- `systems`: which systems to run, their configs and overrides, pretrained references.
- `cli`: the command-line options shared by `compare` and the CoNLL benchmark.
- `reports`, `plots`: the JSON, markdown and plots of both (plots import matplotlib lazily).
- `params`: the parameter counter.
- `inference`: timing and profiling `nlp.pipe` with a saved checkpoint.
- `conll`: CoNLL files to `.spacy` for the benchmark; `machine`: device and versions.
- `stress_docs`, `memory`: the generated streams and the memory readings of the reliability
  stress benchmarks.
- `diagnose`, `diagnose_models`: the harness of `scripts/diagnose.py`.
- `deps`: optional dependencies (the `[plots]` and `[transformers]` extras), checked before
  any work starts.
"""
