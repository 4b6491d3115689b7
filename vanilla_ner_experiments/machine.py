"""The machine a run used: CPU, GPU, torch threads and package versions."""

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Optional

PACKAGES = [
    "spacy",
    "thinc",
    "torch",
    "spacy-vanilla-ner",
    "spacy-transformers",
    "transformers",
    "numpy",
    "cupy",
    "cupy-cuda12x",
    "cupy-cuda11x",
]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def n_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def package_versions() -> Dict[str, Optional[str]]:
    versions: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if not name.startswith("cupy"):
                versions[name] = None
    return versions


def device_info(gpu_id: int) -> Dict[str, Any]:
    """CPU (and GPU with gpu_id >= 0) of this machine; exits if the GPU is not there."""
    import torch

    info: Dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_count": n_cpus(),
        "torch_threads": torch.get_num_threads(),
        "gpu": None,
    }
    if gpu_id >= 0:
        if not torch.cuda.is_available():
            raise SystemExit(
                f"--gpu-id {gpu_id}: torch sees no CUDA device (torch {torch.__version__})."
            )
        info["gpu"] = torch.cuda.get_device_name(gpu_id)
    info["name"] = info["gpu"] or f"{info['cpu']} ({info['cpu_count']} CPUs)"
    return info
