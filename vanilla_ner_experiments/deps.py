"""Optional dependencies of the experiment code, checked before any work starts.

Each extra of the distribution (`[project.optional-dependencies]` in pyproject.toml) provides
some modules. `require("plots")` at the start of a script stops it at once with the install
line, rather than after minutes of training when the first plot is drawn; `missing(...)` says
why an optional system (e.g. the pretrained MiniLM) is skipped.
"""

import importlib
import sys
from typing import Dict, List, Tuple

DISTRIBUTION = "spacy-vanilla-ner"
EXTRAS: Dict[str, Tuple[str, ...]] = {
    "plots": ("matplotlib",),
    # transformers imports lazily: its modeling module is where a broken environment shows
    # (e.g. an optional package it imports that does not match the installed huggingface_hub).
    "transformers": ("spacy_transformers", "transformers", "transformers.modeling_utils"),
    "ray": ("ray", "pyarrow"),
}


class MissingDependency(SystemExit):
    """An optional dependency is not installed; the message has the install line."""


def install_line(*extras: str) -> str:
    return f"pip install '{DISTRIBUTION}[{','.join(extras)}]'"


def missing(*extras: str) -> List[str]:
    """RETURNS (List[str]): the modules of `extras` that cannot be imported: the module's name
    when it is not installed, with the error when it is installed but fails to import."""
    absent = []
    for extra in extras:
        if extra not in EXTRAS:
            raise ValueError(f"unknown extra {extra!r}; choose from {sorted(EXTRAS)}")
        for module in EXTRAS[extra]:
            try:
                importlib.import_module(module)
            except ImportError as e:
                top = module.split(".")[0]
                not_installed = isinstance(e, ModuleNotFoundError) and e.name in (module, top)
                if not_installed or sys.modules.get(module, ...) is None:
                    absent.append(module)
                else:
                    error = str(e).splitlines()[0] if str(e) else ""
                    absent.append(f"{module} (installed, but importing it fails: {error})")
    return absent


def require(*extras: str, what: str = "this command") -> None:
    """Exit (MissingDependency, exit status 1) if a module of `extras` cannot be imported."""
    absent = missing(*extras)
    if absent:
        raise MissingDependency(
            f"{what} needs {', '.join(absent)}, which cannot be imported. "
            f"Install it with: {install_line(*extras)}"
        )
