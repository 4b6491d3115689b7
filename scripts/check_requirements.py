"""Check that `spacy package` will list a package as a requirement of a pipeline.

Usage: python scripts/check_requirements.py MODEL_DIR PACKAGE [PACKAGE ...]

`spacy package` writes the pipeline's requirements into the wheel's metadata:
those in meta.json plus the distributions that provide the registered
functions in config.cfg (found through their entry points). A pipeline with
`vanilla_ner` or our encoder must require spacy-vanilla-ner, or `spacy.load`
fails in an environment where only the wheel was installed. This runs the same
detection as `spacy package` and exits 1 if a package is missing.
"""

import sys
from pathlib import Path

import spacy  # noqa: F401  (registers spaCy's own functions)
import srsly
from packaging.requirements import Requirement
from spacy.cli.package import get_meta
from wasabi import msg


def main(model_dir: str, *packages: str) -> None:
    path = Path(model_dir)
    if not (path / "meta.json").exists():
        msg.fail(f"No meta.json in {path}: train a pipeline first", exits=1)
    meta = get_meta(path, srsly.read_json(path / "meta.json"))
    names = {Requirement(r).name.lower().replace("_", "-") for r in meta["requirements"]}
    missing = [p for p in packages if p.lower().replace("_", "-") not in names]
    if missing:
        msg.fail(
            f"`spacy package` would not list {', '.join(missing)} as requirements of {path}",
            "Detected: "
            + (", ".join(meta["requirements"]) or "none")
            + ". Add them to the pipeline's meta.json 'requirements' or pass --meta-path.",
            exits=1,
        )
    msg.good(f"The package will require: {', '.join(meta['requirements'])}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(2)
    main(*sys.argv[1:])
