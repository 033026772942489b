import contextlib

import torch

from fct_registry.config import OptimConfig
from fct_registry.training.loop import epoch_batches, run_training


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    x, y = torch.randn(64, 4), torch.randn(64, 1)

    def step(idx, gen):
        noise = torch.randn(len(idx), 4, generator=gen) * 0.01  # uses the seeded generator
        return torch.nn.functional.mse_loss(model(x[idx] + noise), y[idx]), {}

    return model, step


def _train(tmp_path, epochs: int, fingerprint: str = "a"):
    model, step = _setup()
    optim = OptimConfig(epochs=epochs, batch_size=16, lr=1e-2, weight_decay=0.0)
    result = run_training(
        model,
        64,
        step,
        optim,
        seed=3,
        device=torch.device("cpu"),
        checkpoint=tmp_path / "ckpt.pt",
        fingerprint=fingerprint,
        desc="t",
    )
    return model, result


def test_loss_decreases(tmp_path):
    _, result = _train(tmp_path, epochs=6)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4, 5, 6]


def test_resume_matches_uninterrupted_run(tmp_path):
    full, _ = _train(tmp_path / "full", epochs=4)
    # "Interrupted" after 2 epochs: same config fingerprint, then continued to 4.
    # An interrupted run's checkpoint holds epochs == 2 of a 4-epoch schedule, so we simulate it
    # by training a 4-epoch run whose checkpoint we truncate after epoch 2.
    part_dir = tmp_path / "part"
    model, step = _setup()
    optim = OptimConfig(epochs=4, batch_size=16, lr=1e-2, weight_decay=0.0)
    calls = {"n": 0}

    def crashing_step(idx, gen):
        calls["n"] += 1
        if calls["n"] > 2 * 4:  # 4 batches per epoch: crash in epoch 3
            raise KeyboardInterrupt
        return step(idx, gen)

    with contextlib.suppress(KeyboardInterrupt):
        run_training(
            model,
            64,
            crashing_step,
            optim,
            seed=3,
            device=torch.device("cpu"),
            checkpoint=part_dir / "ckpt.pt",
            fingerprint="a",
            desc="t",
        )
    resumed_model, step2 = _setup()
    result = run_training(
        resumed_model,
        64,
        step2,
        optim,
        seed=3,
        device=torch.device("cpu"),
        checkpoint=part_dir / "ckpt.pt",
        fingerprint="a",
        desc="t",
    )
    assert result.resumed_from_epoch == 2
    for a, b in zip(full.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_stale_checkpoint_is_ignored(tmp_path):
    _train(tmp_path, epochs=2, fingerprint="old-config")
    _, result = _train(tmp_path, epochs=2, fingerprint="new-config")
    assert result.resumed_from_epoch == 0


def test_epoch_batches_are_a_seeded_partition():
    batches = list(epoch_batches(50, 8, seed=1, epoch=0, max_batches=None))
    assert len(batches) == 6 and all(len(b) == 8 for b in batches)
    flat = torch.cat(batches)
    assert len(set(flat.tolist())) == 48  # no repeats; the partial batch is dropped
    again = list(epoch_batches(50, 8, seed=1, epoch=0, max_batches=None))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    other = torch.cat(list(epoch_batches(50, 8, seed=1, epoch=1, max_batches=None)))
    assert not torch.equal(flat, other)
    assert len(list(epoch_batches(50, 8, seed=1, epoch=0, max_batches=2))) == 2


def test_mid_epoch_resume_skips_done_batches_unread_and_matches(tmp_path):
    """With checkpoint_every, a run killed inside an epoch resumes at the next batch: the
    batches already done are never fetched again, and the weights (and history) equal an
    uninterrupted run's, the augmentation generator included."""
    optim = OptimConfig(epochs=2, batch_size=16, lr=1e-2, weight_decay=0.0)
    common = {"seed": 3, "device": torch.device("cpu"), "fingerprint": "a", "desc": "t"}
    full, step = _setup()
    full_result = run_training(
        full, 64, step, optim, checkpoint=tmp_path / "full.pt", checkpoint_every=1, **common
    )
    fetched: list[list[int]] = []

    def fetch(indices):  # what a streaming split would read
        for idx in indices:
            fetched.append(idx.tolist())
            yield idx

    model, step = _setup()
    calls = {"n": 0}

    def crashing_step(idx, gen):
        calls["n"] += 1
        if calls["n"] == 7:  # the 3rd batch of epoch 2 (4 batches per epoch)
            raise KeyboardInterrupt
        return step(idx, gen)

    with contextlib.suppress(KeyboardInterrupt):
        run_training(
            model, 64, crashing_step, optim, checkpoint=tmp_path / "p.pt",
            checkpoint_every=1, fetch=fetch, **common,
        )  # fmt: skip
    assert torch.load(tmp_path / "p.pt", weights_only=True)["partial"]["batches"] == 2
    fetched.clear()
    resumed, step = _setup()
    result = run_training(
        resumed, 64, step, optim, checkpoint=tmp_path / "p.pt", checkpoint_every=1,
        fetch=fetch, **common,
    )  # fmt: skip
    epoch2 = [b.tolist() for b in epoch_batches(64, 16, seed=3, epoch=1, max_batches=None)]
    assert fetched == epoch2[2:]  # only the batches not done before the kill
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert result.history == full_result.history
