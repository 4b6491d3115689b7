"""Optional dependencies of the experiment code, checked before any work starts.

Each extra of the distribution (`[project.optional-dependencies]` in pyproject.toml) provides
some modules. `require("plots")` at the start of a script stops it at once with the install
line, rather than after minutes of training when the first plot is drawn; `missing(...)` says
why an optional system (e.g. the pretrained MiniLM) is skipped.
"""

import importlib
from typing import Dict, List, Tuple

DISTRIBUTION = "spacy-vanilla-ner"
EXTRAS: Dict[str, Tuple[str, ...]] = {
    "plots": ("matplotlib",),
    "transformers": ("spacy_transformers", "transformers"),
    "ray": ("ray", "pyarrow"),
}


class MissingDependency(SystemExit):
    """An optional dependency is not installed; the message has the install line."""


def install_line(*extras: str) -> str:
    return f"pip install '{DISTRIBUTION}[{','.join(extras)}]'"


def missing(*extras: str) -> List[str]:
    """RETURNS (List[str]): the modules of `extras` that cannot be imported."""
    absent = []
    for extra in extras:
        if extra not in EXTRAS:
            raise ValueError(f"unknown extra {extra!r}; choose from {sorted(EXTRAS)}")
        for module in EXTRAS[extra]:
            try:
                importlib.import_module(module)
            except ImportError:
                absent.append(module)
    return absent


def require(*extras: str, what: str = "this command") -> None:
    """Exit (MissingDependency, exit status 1) if a module of `extras` cannot be imported."""
    absent = missing(*extras)
    if absent:
        raise MissingDependency(
            f"{what} needs {', '.join(absent)}, which is not installed. "
            f"Install it with: {install_line(*extras)}"
        )
