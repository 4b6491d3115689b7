#!/usr/bin/env python
"""The encoder's optimizer step: thinc's per-tensor path against fused ones, in one run.

    python benchmarks/optimizer.py [--gpu-id 0] [--repeats 200]

For the default recipe's encoder (`configs/transformer_vner.cfg`: its parameters, its
optimizer settings), times one optimizer step over all encoder parameters, with random
gradients, in these ways:

- `thinc per-tensor`: thinc's way (one call of thinc's Adam per parameter tensor, with the
  config's gradient clipping, L2 and averages);
- `thinc fused`: what training runs, the encoder's shim (`InPlaceUpdateShim`): one call of the
  same optimizer over a flat buffer of which the parameters are views, with the clipping done
  per tensor before it;
- `torch.optim.Adam foreach` and `fused`: torch's multi-tensor and fused Adam (no
  averages, no clipping: a bound on what fusing can gain).

Prints the median milliseconds per step and writes `--output` (JSON) and a markdown table
next to it (`.md`).
"""

import argparse
import shlex
import statistics
import sys
from pathlib import Path
from timeit import default_timer
from typing import Any, Callable, Dict, List, Optional, Sequence

from vanilla_ner_experiments.machine import device_info, package_versions
from vanilla_ner_experiments.reports import table, write_results

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=REPO / "configs" / "transformer_vner.cfg")
    p.add_argument("--repeats", type=int, default=200, help="Timed steps per way")
    p.add_argument("--gpu-id", type=int, default=-1)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument(
        "--output", type=Path, default=REPO / "benchmarks" / "results" / "optimizer.json"
    )
    args = p.parse_args(argv)
    if args.repeats < 10 or args.threads < 1:
        p.error("--repeats must be at least 10 and --threads positive")
    return args


def build(args: argparse.Namespace) -> Dict[str, Any]:
    """The config's encoder module (on the device) and its optimizer."""
    import spacy
    from spacy.util import load_config, registry
    from thinc.api import require_cpu, require_gpu

    import spacy_vanilla_ner  # noqa: F401  (registers the architectures)

    if args.gpu_id >= 0:
        require_gpu(args.gpu_id)
    else:
        require_cpu()
    config = load_config(args.config, interpolate=True)
    encode = registry.resolve({"m": config["components"]["tok2vec"]["model"]["encode"]})["m"]
    shim = encode.layers[0].shims[0]
    optimizer_config = config["training"]["optimizer"]
    make_optimizer = lambda: registry.resolve({"o": optimizer_config})["o"]  # noqa: E731
    del spacy
    return {"shim": shim, "module": shim._model, "make_optimizer": make_optimizer}


def timed(step: Callable[[], None], sync: Callable[[], None], repeats: int) -> List[float]:
    for _ in range(5):
        step()
    times = []
    for _ in range(repeats):
        sync()
        started = default_timer()
        step()
        sync()
        times.append(default_timer() - started)
    return times


def main(argv: Optional[Sequence[str]] = None) -> int:
    import torch

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    parts = build(args)
    shim, module = parts["shim"], parts["module"]
    device = next(module.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    params = list(module.parameters())
    n_floats = sum(p.numel() for p in params)
    torch.manual_seed(0)

    grads = [torch.randn_like(p) * 1e-2 for p in params]

    def fill_grads() -> None:
        """Gradients into the existing .grad tensors, as autograd accumulates them (so the
        fused way's views of its flat buffer stay views)."""
        for p, g in zip(params, grads):
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)

    ways: Dict[str, Callable[[], None]] = {}
    per_tensor, fused = parts["make_optimizer"](), parts["make_optimizer"]()

    def thinc_per_tensor() -> None:
        fill_grads()
        shim._finish_per_tensor(per_tensor)
        per_tensor.step_schedules()

    def thinc_fused() -> None:
        fill_grads()
        shim.finish_update(fused)
        fused.step_schedules()

    ways["thinc per-tensor"] = thinc_per_tensor
    ways["thinc fused (the encoder's shim)"] = thinc_fused
    for mode in ("foreach", "fused"):
        try:
            adam = torch.optim.Adam(params, lr=1e-3, **{mode: True})
        except (RuntimeError, TypeError) as err:
            print(f"torch.optim.Adam {mode}: not available here ({err})")
            continue

        def torch_step(adam: Any = adam) -> None:
            fill_grads()
            adam.step()
            adam.zero_grad(set_to_none=False)

        ways[f"torch.optim.Adam {mode}"] = torch_step

    fill_cost = timed(fill_grads, sync, args.repeats)
    rows = []
    for name, step in ways.items():
        times = timed(step, sync, args.repeats)
        ms = 1000 * (statistics.median(times) - statistics.median(fill_cost))
        rows.append({"way": name, "median_ms": ms})
        print(f"{name}: {ms:.3f} ms per step", flush=True)
    meta = {
        "script": "benchmarks/optimizer.py",
        "command": "python " + shlex.join(["benchmarks/optimizer.py", *argv]),
        "device": device_info(args.gpu_id)["name"],
        "torch_threads": args.threads,
        "versions": package_versions(),
        "n_tensors": len(params),
        "n_floats": n_floats,
        "repeats": args.repeats,
        "note": "median ms per step, minus the median time of filling the random gradients",
    }
    first = rows[0]["median_ms"]
    lines = [
        [f"{r['way']}", f"{r['median_ms']:.3f}", f"{r['median_ms'] / first:.2f}×"] for r in rows
    ]
    report = "\n".join(
        [
            "# The encoder's optimizer step",
            "",
            f"`{meta['command']}`",
            "",
            f"{meta['device']}, {args.threads} torch thread(s); {len(params)} parameter tensors, "
            f"{n_floats:,} floats; median of {args.repeats} steps.",
            "",
            *table(["Way", "ms per step", "vs per-tensor"], lines),
            "",
        ]
    )
    write_results(args.output, {"meta": meta, "rows": rows}, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
