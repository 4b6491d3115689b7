"""`python -m spacy_vanilla_ner`: the package's command line, one typer app with a
subcommand per task, as `python -m spacy`:

    python -m spacy_vanilla_ner init-config OUTPUT.cfg [--gpu] [--train PATH]
    python -m spacy_vanilla_ner convert INPUT OUTPUT [--n-sents N] [--limit N]
    python -m spacy_vanilla_ner debug-data CONFIG --paths.train TRAIN --paths.dev DEV
    python -m spacy_vanilla_ner annotate MODEL INPUT OUTPUT [--engine ray ...]

`convert`, `debug-data` and `annotate` are the commands of their modules, registered here
once more (`python -m spacy_vanilla_ner.convert` etc. run the same functions). Importing
this module imports no optional dependency: `annotate` imports Ray and pyarrow only when
it needs them.
"""

import math
import sys
from contextlib import nullcontext, redirect_stdout
from pathlib import Path
from typing import Dict, Optional

import typer
from thinc.api import Config
from wasabi import msg

from . import convert, debug_data
from .annotate import cli as annotate_cli
from .corpus_files import CorpusFileError, count_words, fail

RECIPE_PATH = Path(__file__).parent / "recipe.cfg"

# How long to train on a corpus of N words (tokens) with B words per batch (the config's
# [training.batcher.size] rate): max_steps = max(MIN_STEPS, PASSES * N / B rounded up to
# STEP_ROUNDING). The learning rate warms up over the first steps and decays linearly to 0
# at max_steps, so max_steps sets both how often each word is seen and the schedule.
# - PASSES: passes over the training words, about what the recipe needs to converge;
#   fewer under-train a large corpus, more only cost time.
# - MIN_STEPS: the recipe's own max_steps; a small corpus still needs that many updates
#   to converge (so it is seen more often than PASSES times).
# - WARMUP_DIVISOR: the warmup is this fraction of the steps, the recipe's share.
# - EVALUATIONS: evaluate on dev about this many times whatever the run's length, so that
#   model-best is picked among as many checkpoints and evaluation costs the same share
#   of any run; never more often than every STEP_ROUNDING steps.
PASSES = 30
MIN_STEPS = 1500
WARMUP_DIVISOR = 10
EVALUATIONS = 15
STEP_ROUNDING = 100
# The recipe's [training.batcher.size] rate, for the help text only (a test checks it);
# `scale_training` reads the batch size of the config it changes.
RECIPE_BATCH_WORDS = 1000

app = typer.Typer(
    name="spacy_vanilla_ner",
    help="spacy-vanilla-ner: train, check and run the vanilla_ner NER recipe with spaCy.",
    add_completion=False,
)


@app.callback(invoke_without_command=True)
def _show_help(ctx: typer.Context) -> None:
    # No command: the list of commands, with exit code 0 (no_args_is_help exits with 2).
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


def load_recipe() -> Config:
    """The package's training recipe (`spacy_vanilla_ner/recipe.cfg`), not interpolated.

    RETURNS (Config): The full spaCy training config.
    """
    return Config().from_str(RECIPE_PATH.read_text(encoding="utf8"), interpolate=False)


def batch_words(config: Config) -> int:
    """The words per training batch of a config: [training.batcher.size] rate, or a
    plain number as `size`."""
    size = config["training"]["batcher"]["size"]
    return int(size["rate"] if isinstance(size, dict) else size)


def scale_training(config: Config, n_words: int) -> Dict[str, int]:
    """Set the training length of a config for a training corpus of `n_words` words:
    max_steps (about PASSES passes over the corpus, at least MIN_STEPS), the warmup
    (a tenth of it) and eval_frequency (about EVALUATIONS evaluations).

    config (Config): The config, changed in place; `total_steps` of the learning rate
        schedule stays `${training.max_steps}`.
    n_words (int): The words (tokens) of the training corpus.
    RETURNS (Dict[str, int]): The values set: max_steps, warmup_steps, eval_frequency.
    """
    per_batch = batch_words(config)
    steps = math.ceil(PASSES * n_words / per_batch / STEP_ROUNDING) * STEP_ROUNDING
    max_steps = max(MIN_STEPS, steps)
    values = {
        "max_steps": max_steps,
        "warmup_steps": max_steps // WARMUP_DIVISOR,
        "eval_frequency": max(
            STEP_ROUNDING, round(max_steps / EVALUATIONS / STEP_ROUNDING) * STEP_ROUNDING
        ),
    }
    config["training"]["max_steps"] = values["max_steps"]
    config["training"]["eval_frequency"] = values["eval_frequency"]
    config["training"]["optimizer"]["learn_rate"]["warmup_steps"] = values["warmup_steps"]
    return values


def init_config(
    output_file: Path = typer.Argument(
        ...,
        metavar="OUTPUT",
        help="Config file to write (replaced if it exists), or - for stdout",
        allow_dash=True,
    ),
    gpu: bool = typer.Option(
        False,
        "--gpu",
        "-G",
        help='For training on a GPU: set system.gpu_allocator = "pytorch", so that cupy and '
        "torch share one memory pool. Nothing else changes: the recipe was measured on CPU",
    ),
    train_path: Optional[Path] = typer.Option(
        None,
        "--train",
        "-t",
        metavar="PATH",
        help="Training corpus (.spacy file or directory of them, as spacy train reads): "
        f"scale max_steps to about {PASSES} passes over its words (at least {MIN_STEPS:,}), "
        "the warmup to a tenth of it and eval_frequency. Default: the recipe's "
        f"{MIN_STEPS:,} steps, enough for up to about "
        f"{MIN_STEPS * RECIPE_BATCH_WORDS // PASSES:,} words",
    ),
) -> None:
    """Write the package's training recipe (a from-scratch Transformer encoder +
    vanilla_ner) as a spaCy training config for `spacy train`, like `spacy init config`
    (no comments in the output). With --train, the training length fits your corpus."""
    is_stdout = str(output_file) == "-"
    # With `-` the config alone goes to stdout, the messages to stderr.
    with redirect_stdout(sys.stderr) if is_stdout else nullcontext():
        config = load_recipe()
        per_batch = batch_words(config)
        if train_path is not None:
            try:
                n_words = count_words(train_path, "train")
            except CorpusFileError as e:
                fail(e)
            if n_words == 0:
                fail(f"{train_path}: no words in the training corpus")
            values = scale_training(config, n_words)
            passes = values["max_steps"] * per_batch / n_words
            floor = " (the recipe's minimum)" if values["max_steps"] == MIN_STEPS else ""
            msg.good(
                f"Training corpus {train_path}: {n_words:,} words -> "
                f"{values['max_steps']:,} steps{floor}, {passes:.1f} passes over it in "
                f"batches of {per_batch:,} words"
            )
            msg.text(
                f"training.max_steps = {values['max_steps']}, "
                f"training.optimizer.learn_rate.warmup_steps = {values['warmup_steps']} "
                f"(a tenth), training.eval_frequency = {values['eval_frequency']}"
            )
        else:
            max_words = MIN_STEPS * per_batch // PASSES
            msg.info(
                f"Training length: the recipe's {MIN_STEPS:,} steps suit a corpus of up to "
                f"about {max_words:,} training words. For a larger corpus, pass --train "
                f"CORPUS.spacy (or set training.max_steps to about {PASSES} passes: "
                f"{PASSES} x words / {per_batch:,}, and "
                f"training.optimizer.learn_rate.warmup_steps to a tenth of it)."
            )
        if gpu:
            config["system"]["gpu_allocator"] = "pytorch"
            msg.good('system.gpu_allocator = "pytorch" (cupy and torch share one memory pool)')
        text = config.to_str(interpolate=False) + "\n"
        if not is_stdout:
            try:
                output_file.parent.mkdir(parents=True, exist_ok=True)
                output_file.write_text(text, encoding="utf8")
            except OSError as e:
                fail(f"Cannot write {output_file}: {e}")
            msg.good(f"Saved config to {output_file}")
        cfg = "CONFIG" if is_stdout else str(output_file)
        train = str(train_path) if train_path is not None else "corpus/train.spacy"
        paths = f"--paths.train {train} --paths.dev corpus/dev.spacy"
        gpu_id = " --gpu-id 0" if gpu else ""
        msg.text("Next steps: check the data, then train:")
        # print, not msg.text: a command wrapped over two lines cannot be pasted.
        print(f"python -m spacy_vanilla_ner debug-data {cfg} {paths}")
        print(f"python -m spacy train {cfg} --output training {paths}{gpu_id}")
    if is_stdout:
        sys.stdout.write(text)


# In the order of the help: the commands of a user's workflow.
app.command("init-config", short_help="Write the training recipe as a spaCy training config.")(
    init_config
)
app.command("convert", short_help="Convert a CoNLL NER file (IOB/BILUO tags) to a .spacy DocBin.")(
    convert.main
)
app.command(
    "debug-data",
    short_help="Check NER training data (.spacy corpora) for vanilla_ner.",
    # CONFIG --paths.train ... --paths.dev ...: the overrides come as extra arguments.
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)(debug_data.main)
app.command(
    "annotate", short_help="Annotate a corpus (JSONL, Parquet, text) with a pipeline's entities."
)(annotate_cli.main)
