"""Windowing: plans that tile a doc, bounded window batches, and windowed
outputs equal to each owning window run alone; the fork hook."""

import os
import signal
import time

import numpy
import pytest
import torch
from thinc.api import fix_random_seed

from spacy_vanilla_ner.models import windowing
from spacy_vanilla_ner.models.encoder import build_transformer_encoder_v1
from spacy_vanilla_ner.models.torch_encoder import EncoderConfig, TransformerEncoderModule
from spacy_vanilla_ner.models.windowing import WindowedEncoder, build_window_batch, plan_windows
from tests.helpers import encoder_module


def test_plan_windows_tiles_doc():
    for length in [0, 1, 16, 17, 40, 100, 513]:
        windows = plan_windows(length, max_length=16, overlap=4)
        owned = [i for _, _, s, e in windows for i in range(s, e)]
        assert owned == list(range(length))
        for start, end, own_start, own_end in windows:
            assert 0 <= start <= own_start <= own_end <= end <= length
            assert end - start <= 16


def test_window_batches_are_bounded():
    batch = build_window_batch([5000, 20, 0, 700], 512, 128, 4096, torch.device("cpu"))
    for chunk in batch.chunks:
        B, T = chunk.shape
        assert T <= 512 and B * T <= 4096
    assert batch.output_index.shape == (5720,)
    assert len(set(batch.output_index.tolist())) == 5720


@pytest.mark.parametrize(
    "lengths,max_length,overlap,max_batch_tokens",
    [
        ([50_000], 512, 128, 16384),
        ([0, 1, 700, 3, 0], 512, 128, 16384),
        ([511, 512, 513, 1024, 50_000, 7], 512, 128, 2048),
        ([100, 37, 16, 15, 17, 0], 16, 4, 40),
        ([33], 16, 8, 1),  # max_batch_tokens below max_length: one window per chunk
        ([20, 20], 16, 0, 64),
    ],
)
def test_window_batch_shapes_and_tiling(lengths, max_length, overlap, max_batch_tokens):
    batch = build_window_batch(lengths, max_length, overlap, max_batch_tokens, torch.device("cpu"))
    n_tokens = sum(lengths)
    tokens = []
    for chunk in batch.chunks:
        B, T = chunk.shape
        layout = chunk.layout
        assert T <= max_length
        assert B * T <= max(max_batch_tokens, max_length)
        # Each window is a prefix of its grid row, its tokens consecutive in the doc, and the
        # layout's two maps are inverse to each other.
        lengths_in_rows = layout.mask.sum(dim=1)
        assert bool((lengths_in_rows > 0).all()) and int(lengths_in_rows.max()) == T
        assert bool((layout.mask == (torch.arange(T)[None, :] < lengths_in_rows[:, None])).all())
        assert layout.pad_index.reshape(-1)[layout.index].tolist() == list(range(layout.n_tokens))
        assert chunk.tokens.shape == (layout.n_tokens,)
        grid = layout.pad(chunk.tokens[:, None].double() + 1)[..., 0]  # token + 1, 0 at padding
        for b in range(B):
            row = grid[b, : int(lengths_in_rows[b])].long() - 1
            assert bool((row[1:] - row[:-1] == 1).all())
        tokens.append(chunk.tokens)
    # Every token takes its output from exactly one packed row that holds that token.
    index = batch.output_index
    assert index.shape == (n_tokens,) and len(set(index.tolist())) == n_tokens
    flat_tokens = torch.cat(tokens) if tokens else torch.zeros(0, dtype=torch.long)
    assert flat_tokens[index].tolist() == list(range(n_tokens))


@pytest.mark.parametrize("positions", ["rotary", "sinusoidal", "learned", "none"])
def test_windowed_output_equals_each_owning_window_alone(positions):
    # A doc longer than max_length: each token's output is exactly its owning
    # window's output when that window is run as a doc on its own.
    fix_random_seed(0)
    model = build_transformer_encoder_v1(
        16,
        2,
        2,
        max_length=16,
        window_overlap=4,
        dropout=0.0,
        attention_dropout=0.0,
        positions=positions,
    )
    rng = numpy.random.RandomState(0)
    docs = [rng.normal(size=(n, 16)).astype("f") for n in (50, 16, 17, 3)]
    model.initialize(X=docs)
    outputs = model.predict(docs)
    for X, Y in zip(docs, outputs):
        for start, end, own_start, own_end in plan_windows(len(X), 16, 4):
            alone = model.predict([X[start:end]])[0]
            numpy.testing.assert_allclose(
                Y[own_start:own_end], alone[own_start - start : own_end - start], atol=1e-5
            )


def test_windowed_encoder_close_to_single_window():
    # Same weights, max_length=16 (windowed) vs 64 (one window): close everywhere.
    fix_random_seed(0)
    kwargs = dict(dropout=0.0, attention_dropout=0.0, positions="rotary")
    small = build_transformer_encoder_v1(16, 2, 2, max_length=16, window_overlap=4, **kwargs)
    big = build_transformer_encoder_v1(16, 2, 2, max_length=64, window_overlap=4, **kwargs)
    X = numpy.random.RandomState(0).normal(size=(50, 16)).astype("f")
    small.initialize(X=[X])
    big.initialize(X=[X])
    encoder_module(big).load_state_dict(encoder_module(small).state_dict())
    Ys, Yb = small.predict([X])[0], big.predict([X])[0]
    # The first window's own tokens see nothing different before the cut...
    rel = numpy.abs(Ys - Yb).mean(axis=1) / numpy.abs(Yb).mean()
    assert rel.max() < 0.02, rel


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_large_activations_and_masked_window_finite(dtype):
    torch.manual_seed(0)
    config = EncoderConfig(width=32, depth=2, n_heads=4, ff_width=64, max_length=16)
    encoder = WindowedEncoder(TransformerEncoderModule(config)).cuda()
    lengths = [0, 40, 3, 0, 16]
    X = (torch.randn(sum(lengths), 32, device="cuda") * 300).requires_grad_()  # large activations
    batch = build_window_batch(lengths, 16, 4, 48, X.device)
    assert all(
        c.tokens.device.type == "cuda" and c.layout.pad_index.device.type == "cuda"
        for c in batch.chunks
    )
    with torch.autocast(device_type="cuda", dtype=dtype):
        Y = encoder(X, batch=batch)
    assert Y.dtype == torch.float32 and torch.isfinite(Y).all()
    Y.pow(2).mean().backward()
    assert torch.isfinite(X.grad).all()
    # An all-padding window straight into the module, under autocast.
    module = encoder.encoder
    Xw = (torch.randn(2, 16, 32, device="cuda") * 300).requires_grad_()
    mask = torch.zeros(2, 16, dtype=torch.bool, device="cuda")
    mask[1, :5] = True
    with torch.autocast(device_type="cuda", dtype=dtype):
        Yw = module(Xw, mask)
    assert torch.isfinite(Yw).all() and (Yw[0] == 0).all()
    Yw.float().sum().backward()
    assert torch.isfinite(Xw.grad).all()


def test_fork_hook_registered_once_when_an_encoder_is_built(monkeypatch):
    """Built, not first run: `spacy.load` then `nlp.pipe(n_process=2)` forks
    before the parent's first forward pass, and must fork with the hook."""
    registered = []
    monkeypatch.setattr(windowing.os, "register_at_fork", lambda **kw: registered.append(kw))
    monkeypatch.setattr(windowing, "_fork_hook_registered", False)
    encoder = WindowedEncoder(TransformerEncoderModule(EncoderConfig(16, 1, 2)))
    assert registered == [{"after_in_child": windowing._one_thread_after_fork}]
    X = torch.randn(7, 16)
    batch = build_window_batch([3, 4], 512, 128, 16384, X.device)
    for _ in range(2):
        encoder(X, batch=batch)
    windowing.register_fork_hook()
    assert registered == [{"after_in_child": windowing._one_thread_after_fork}]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_runs_torch_on_one_thread():
    model = build_transformer_encoder_v1(16, 1, 2)
    model.initialize()
    model.predict([numpy.zeros((3, 16), dtype="f")])  # registers the hook (once per process)
    torch.ones(256, 256) @ torch.ones(256, 256)  # the parent runs a parallel op first
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its thread count, run a parallel op, leave
        os.close(read)
        os.write(write, str(torch.get_num_threads()).encode())
        os.close(write)
        torch.ones(256, 256) @ torch.ones(256, 256)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        child_threads = f.read()
    deadline = time.monotonic() + 60
    done, status = os.waitpid(pid, os.WNOHANG)
    while not done:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung in a torch op")
        time.sleep(0.05)
        done, status = os.waitpid(pid, os.WNOHANG)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert child_threads == "1"


def test_chunks_group_windows_of_similar_length():
    """Attention pads a chunk's windows to its longest: a chunk holds windows of at most
    twice the length of its shortest (or up to 8 tokens), so a batch of sentences of
    mixed length pads little."""
    lengths = list(range(1, 120)) * 2
    batch = build_window_batch(lengths, 512, 128, 16384, torch.device("cpu"))
    for chunk in batch.chunks:
        sizes = chunk.layout.mask.sum(dim=1)
        assert int(sizes.max()) <= max(2 * int(sizes.min()), 8)
    padded = sum(c.shape[0] * c.shape[1] for c in batch.chunks)
    assert padded < 1.5 * sum(lengths)
    assert len(batch.chunks) <= 8


def test_window_batch_is_one_transfer():
    """Every index tensor of a batch is a view of one buffer, copied to the device once (on a
    GPU, one host-to-device transfer per batch rather than three per chunk)."""
    batch = build_window_batch([3, 40, 7, 0, 600], 512, 128, 4096, torch.device("cpu"))
    assert len(batch.chunks) > 1
    tensors = [batch.output_index] + [
        t for c in batch.chunks for t in (c.tokens, c.layout.index, c.layout.pad_index)
    ]
    storages = {t.untyped_storage().data_ptr() for t in tensors}
    assert len(storages) == 1
