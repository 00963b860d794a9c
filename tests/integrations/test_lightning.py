"""GradientCallback in a real Lightning Trainer on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

import bptt
from bptt.clip import Fixed, Percentile

pl = pytest.importorskip("lightning.pytorch", reason="Lightning is not installed")
from bptt.integrations.lightning import GradientCallback, TruncatedBPTTModule  # noqa: E402

# Lightning's advice on workers and logging (UserWarning), and its own use of
# deprecated torch internals: not this project's to fix
_LIGHTNING_WARNINGS = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning"
)


class _Recording(torch.optim.SGD):
    """SGD that notes the gradient's norm it steps with: Lightning runs the closure
    (forward, backward, then the callbacks' on_before_optimizer_step) inside step."""

    def __init__(self, params, norms: list[float]) -> None:
        super().__init__(params, lr=0.5)
        self.norms = norms

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        grads = [
            p.grad for group in self.param_groups for p in group["params"] if p.grad is not None
        ]
        self.norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
        super().step()
        return loss


class Adding(pl.LightningModule):
    """A SequenceModel on the adding problem; ``norms`` keeps the gradient's norm that
    the optimizer saw at every step (after the callback), for the test to check."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = bptt.SequenceModel(bptt.cells.RNNCell(2, 16), 1)
        self.norms: list[float] = []

    def training_step(self, batch, index):
        x, y = batch
        return torch.nn.functional.mse_loss(self.model(x)[0], y)

    def configure_optimizers(self):
        return _Recording(self.parameters(), self.norms)

    def train_dataloader(self):
        x, y = bptt.tasks.adding_problem(10, 256, seed=0)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)


def _trainer(tmp_path, callback, steps, accumulate=1):
    return pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        callbacks=[callback],
        accumulate_grad_batches=accumulate,
        logger=pl.loggers.CSVLogger(str(tmp_path)),
        default_root_dir=str(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("PL_DISABLE_FORK", "1")


@_LIGHTNING_WARNINGS
def test_the_callback_clips_what_the_optimizer_steps_with(tmp_path):
    callback = GradientCallback(clip=Fixed(0.1))
    module = Adding()
    _trainer(tmp_path, callback, steps=12, accumulate=2).fit(module)
    assert len(callback.rows) == 12 == len(module.norms)
    for row, seen in zip(callback.rows, module.norms, strict=True):
        assert math.isfinite(row["grad_norm"]) and row["clip_threshold"] == 0.1
        # what the optimizer stepped with: the norm, clipped to 0.1 when above it
        expected = min(row["grad_norm"], 0.1)
        assert seen == pytest.approx(expected, rel=1e-5)
        assert row["clipped"] == (row["grad_norm"] > 0.1)
        assert "grad_norm/model.cells.0.weight_hh" in row
    logged = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "bptt/grad_norm" in logged and "bptt/clip_threshold" in logged


@_LIGHTNING_WARNINGS
def test_a_resumed_fit_goes_on_with_the_policys_history(tmp_path):
    first = GradientCallback(clip=Percentile(50))
    trainer = _trainer(tmp_path / "a", first, steps=6)
    trainer.fit(Adding())
    checkpoint = tmp_path / "six.ckpt"
    trainer.save_checkpoint(str(checkpoint))
    history = first.clip.state_dict()["histories"][0].tolist()
    again = GradientCallback(clip=Percentile(50))
    _trainer(tmp_path / "b", again, steps=10).fit(Adding(), ckpt_path=str(checkpoint))
    assert len(again.rows) == 4  # steps 7..10
    assert again.clip.state_dict()["histories"][0].tolist()[: len(history)] == history
    assert again.clip.state_dict()["calls"] == 10
    assert again.monitor.loss_spikes.state_dict() != {}


def test_a_bad_policy_is_refused():
    with pytest.raises(TypeError, match="clip"):
        GradientCallback(clip=1.0)


def _stream_chunks(chunks=9, batch=4, n=7, seed=0):
    """A stream (B, chunks * n, 1) whose target is the input 6 steps back, in chunks."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, chunks * n, 1, generator=g)
    y = torch.cat([torch.zeros(batch, 6, 1), x[:, :-6]], dim=1)
    return [(x[:, i * n : (i + 1) * n], y[:, i * n : (i + 1) * n]) for i in range(chunks)]


class _Chunks(torch.utils.data.Dataset):
    def __init__(self, chunks):
        self.chunks = chunks

    def __len__(self):
        return len(self.chunks)

    def __getitem__(self, index):
        return self.chunks[index]


class Echo(TruncatedBPTTModule):
    def __init__(self, chunks):
        torch.manual_seed(0)
        model = bptt.SequenceModel(bptt.cells.GRUCell(1, 8), 1, readout="all")
        super().__init__(model, k1=5, k2=12, loss_fn=torch.nn.functional.mse_loss)
        self.chunks = chunks
        self.buffered: list[int] = []  # steps held after each chunk: O(k2 + n)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(_Chunks(self.chunks), batch_size=None)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.buffered.append(self.tbptt.state_dict()["x"].shape[1])


def _fit(module, tmp_path, epochs, callbacks=(), ckpt_path=None):
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        callbacks=list(callbacks),
        logger=pl.loggers.CSVLogger(str(tmp_path)),
        default_root_dir=str(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, ckpt_path=ckpt_path)
    return trainer


def _plain_loop(passes):
    """The reference: Echo's model fed each pass's chunks by bptt.TBPTT in a plain loop,
    each pass from a fresh state; returns the model and the number of updates."""
    torch.manual_seed(0)
    model = bptt.SequenceModel(bptt.cells.GRUCell(1, 8), 1, readout="all")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    updates = 0
    for chunks in passes:
        plain = bptt.TBPTT(model, 5, 12, torch.nn.functional.mse_loss, optimizer)
        for x, y in chunks:
            updates += len(plain.step(x, y))
    return model, updates


def _assert_equal(ours, theirs):
    """Bit for bit, parameter by parameter."""
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@_LIGHTNING_WARNINGS
def test_truncated_bptt_in_a_trainer_equals_the_plain_loop_and_resumes(tmp_path):
    chunks = _stream_chunks()
    module = Echo(chunks)
    callback = GradientCallback()
    _fit(module, tmp_path / "a", epochs=2, callbacks=[callback])
    # the reference: bptt.TBPTT fed the same chunks in a plain loop, the state reset
    # at each pass over the stream
    model, updates = _plain_loop([chunks, chunks])
    _assert_equal(module.model, model)
    assert updates == 2 * (9 * 7 // 5) and len(callback.rows) == updates  # a hook per update
    assert max(module.buffered) <= 12 + 7  # never more than k2 + a chunk of the stream
    logged = (tmp_path / "a" / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "tbptt/loss" in logged and "bptt/grad_norm" in logged

    # one epoch, a checkpoint, then the second epoch resumed from it: the same model
    first = Echo(chunks)
    trainer = _fit(first, tmp_path / "b", epochs=1)
    trainer.save_checkpoint(str(tmp_path / "one.ckpt"))
    resumed = Echo(chunks)
    _fit(resumed, tmp_path / "c", epochs=2, ckpt_path=str(tmp_path / "one.ckpt"))
    _assert_equal(resumed.model, model)


def test_truncated_bptt_refuses_bad_settings():
    model = bptt.SequenceModel(bptt.cells.GRUCell(1, 4), 1, readout="all")
    mse = torch.nn.functional.mse_loss
    with pytest.raises(ValueError, match="k1"):
        TruncatedBPTTModule(model, 0, 4, mse)
    with pytest.raises(ValueError, match="k1 = 5 > k2 = 4"):
        TruncatedBPTTModule(model, 5, 4, mse)
    with pytest.raises(ValueError, match="readout"):
        TruncatedBPTTModule(bptt.SequenceModel(bptt.cells.GRUCell(1, 4), 1), 2, 4, mse)
    with pytest.raises(TypeError, match="loss_fn"):
        TruncatedBPTTModule(model, 2, 4, "mse")
    with pytest.raises(ValueError, match="lr"):
        TruncatedBPTTModule(model, 2, 4, mse, lr=0)


@_LIGHTNING_WARNINGS
def test_a_fit_stopped_inside_an_epoch_resumes_at_the_next_with_a_fresh_state(tmp_path):
    chunks = _stream_chunks()
    first = Echo(chunks)
    trainer = pl.Trainer(
        max_steps=5,  # five updates: the fit stops inside the first epoch, after 4 chunks
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(first)
    trainer.save_checkpoint(str(tmp_path / "mid.ckpt"))
    resumed = Echo(chunks)
    _fit(resumed, tmp_path / "r", epochs=2, ckpt_path=str(tmp_path / "mid.ckpt"))
    # Lightning 2.6 counts that epoch as done and starts the next at its first chunk:
    # the plain-loop reference is 4 chunks, then a whole pass from a fresh state
    model, _ = _plain_loop([chunks[:4], chunks])
    _assert_equal(resumed.model, model)


class _Diagnosed(Adding):
    """Adding with a forward: what the diagnosis runs, as loss_fn(module(x), y)."""

    def forward(self, x):
        return self.model(x)[0]


@_LIGHTNING_WARNINGS
def test_the_callback_diagnoses_every_n_steps_and_logs_each_layer(tmp_path):
    plain = _Diagnosed()
    _trainer(tmp_path / "plain", GradientCallback(), steps=6).fit(plain)
    callback = GradientCallback(diagnose_every=3, loss_fn=torch.nn.functional.mse_loss)
    module = _Diagnosed()
    _trainer(tmp_path / "diag", callback, steps=6).fit(module)
    assert [step for step, _ in callback.diagnoses] == [3, 6]
    for _, found in callback.diagnoses:
        assert [layer.name for layer in found.layers] == ["model.cells.0"]
        assert found.layers[0].numbers["length"] == found.norms.shape[0]  # a measured curve
        assert bool(torch.isfinite(found.norms).all())
    # the diagnosis leaves the fit as it was: the optimizer stepped with the same
    # gradients as without it
    assert module.norms == plain.norms
    logged = (tmp_path / "diag" / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    header = logged.splitlines()[0]
    assert "bptt/diagnose/model.cells.0/gamma" in header
    assert "bptt/diagnose/model.cells.0/verdict" in header and "bptt/diagnose/verdict" in header


class _Dict(_Diagnosed):
    """A module whose batches are dicts: it says how to read (x, y) from them."""

    def training_step(self, batch, index):
        return super().training_step((batch["x"], batch["y"]), index)

    def diagnose_batch(self, batch):
        return batch["x"], batch["y"]

    def train_dataloader(self):
        x, y = bptt.tasks.adding_problem(10, 64, seed=0)
        pairs = [{"x": a, "y": b} for a, b in zip(x, y, strict=True)]
        return torch.utils.data.DataLoader(pairs, batch_size=16)


@_LIGHTNING_WARNINGS
def test_the_module_can_say_how_a_batch_gives_x_and_y(tmp_path):
    callback = GradientCallback(diagnose_every=2, loss_fn=torch.nn.functional.mse_loss)
    _trainer(tmp_path, callback, steps=2).fit(_Dict())
    assert [step for step, _ in callback.diagnoses] == [2]


def test_bad_diagnosis_settings_are_refused():
    with pytest.raises(ValueError, match="diagnose_every"):
        GradientCallback(diagnose_every=0)
    with pytest.raises(TypeError, match="diagnose_every"):
        GradientCallback(diagnose_every=1.5)
    with pytest.raises(TypeError, match="loss_fn"):
        GradientCallback(diagnose_every=1, loss_fn=3)
    with pytest.raises(ValueError, match="give diagnose_every too"):
        GradientCallback(loss_fn=torch.nn.functional.mse_loss)


def test_a_batch_that_gives_no_x_and_y_is_named():
    callback = GradientCallback(diagnose_every=1)
    callback._batch = torch.zeros(3)  # what on_train_batch_start kept
    with pytest.raises(TypeError, match=r"diagnose_batch\(batch\) -> \(x, y\)"):
        callback._diagnose(1, _Diagnosed())
