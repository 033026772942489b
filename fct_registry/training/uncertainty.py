"""Training an uncertainty-aware transformation (FastFill): Gaussian NLL on the regression,
optionally FastFill's point-to-cluster term through the new model's classifier.

Per item ``i`` with squared error per dimension ``e_i = ||mu_i - y_i||^2 / d`` and predicted
log-variance ``s_i``, the isotropic Gaussian negative log-likelihood (per dimension, constants
dropped) is ``0.5 * (e_i * exp(-s_i) + s_i)``; its minimum over ``s_i`` is at ``exp(s_i) = e_i``,
so the head learns the item's expected error. Plain NLL also scales the embedding's gradient by
``1/sigma_i^2``, which starves hard items of learning and costs retrieval accuracy; ``beta``
applies beta-NLL (Seitzer et al., ICLR 2022): each item's loss is weighted by
``stopgrad(sigma_i^2)^beta``. ``beta=1`` gives the embedding exactly the MSE gradient (up to a
constant) while the head still learns the error; ``beta=0`` is the plain NLL. The variance
head shares the trunk; with ``detach_variance`` (the default) it sends no gradient into it, so
the embedding trains exactly as the plain transformation's: jointly trained (beta=1) on the
default family, the uncertainty model's training MSE was ~14% above the plain one's at the same
epoch, which costs transform-only accuracy.

The point-to-cluster term (FastFill Sec. 3.2) is the cross-entropy of the *frozen* new model's
classifier applied to the transformed embedding: it pulls each transformed item towards its
class cluster in the new space. Items whose class the new model was not trained on are skipped.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fct_registry.config import UncertaintyTrainingConfig
from fct_registry.errors import ConfigError
from fct_registry.models.transformations import TRANSFORMATIONS
from fct_registry.models.uncertainty import KIND, WithUncertainty, predicts_uncertainty
from fct_registry.training.distributed import context
from fct_registry.training.loop import LoopResult, prepare_model, run_training, unwrap


def gaussian_nll(
    pred: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor, beta: float = 0.0
) -> torch.Tensor:
    """Mean over items of the per-dimension isotropic Gaussian NLL (constants dropped), each
    item weighted by ``stopgrad(exp(log_var))**beta`` (beta-NLL)."""
    err = (pred - target).square().mean(dim=1)
    nll = 0.5 * (err * torch.exp(-log_var) + log_var)
    if beta:
        nll = nll * torch.exp(beta * log_var.detach())
    return nll.mean()


def point_to_cluster(
    pred: torch.Tensor, labels: torch.Tensor, classifier: nn.Module, class_index: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the frozen new classifier on the transformed embeddings.

    ``class_index[label]`` is the classifier's output index of a dataset label, -1 for labels
    the new model was not trained on (ignored)."""
    target = class_index[labels]
    return F.cross_entropy(classifier(pred), target, ignore_index=-1)


def class_index(classes: list[int] | None, num_labels: int) -> torch.Tensor:
    """Dataset label -> classifier output index (``classes``: the version's training classes,
    None for all); -1 where the version has no output for a label."""
    index = torch.full((num_labels,), -1, dtype=torch.long)
    chosen = list(range(num_labels)) if classes is None else classes
    for i, c in enumerate(chosen):
        index[c] = i
    return index


def train_uncertainty_transformation(
    cfg: UncertaintyTrainingConfig,
    old: torch.Tensor,
    side_info: torch.Tensor,
    new: torch.Tensor,
    spec: dict,
    *,
    seed: int,
    device: torch.device,
    checkpoint: Path,
    fingerprint: str,
    desc: str,
    labels: torch.Tensor | None = None,
    classifier: nn.Module | None = None,
    classes: torch.Tensor | None = None,
) -> tuple[nn.Module, LoopResult]:
    """Train ``spec['type']`` (an uncertainty-predicting kind) on stored training embeddings.

    With ``cfg.p2c_weight > 0`` pass ``labels`` (dataset labels of the training rows), the new
    model's ``classifier`` (kept frozen) and ``classes`` (from :func:`class_index`).
    """
    torch.manual_seed(seed)
    model = TRANSFORMATIONS.build(
        spec["type"],
        old_dim=spec["old_dim"],
        new_dim=spec["new_dim"],
        side_info_dim=spec["side_info_dim"],
        hidden_dim=spec["hidden_dim"],
    )
    if not predicts_uncertainty(model):
        raise ConfigError(
            f"transformation kind {spec['type']!r} predicts no uncertainty; use {KIND!r}"
        )
    use_p2c = cfg.p2c_weight > 0
    if use_p2c and (labels is None or classifier is None or classes is None):
        raise ConfigError(
            "p2c_weight > 0 needs the training labels, the new model's classifier and its "
            "class index; pass them, or set p2c_weight: 0"
        )
    model.detach_variance = cfg.detach_variance
    model = model.to(device)
    # The two-output view goes through prepare_model, so DDP sees (and syncs) the real forward.
    net = prepare_model(WithUncertainty(model), device)
    ctx = context()
    old, side_info, new = old.to(device), side_info.to(device), new.to(device)
    if use_p2c:
        classifier = classifier.to(device).eval().requires_grad_(False)
        labels, classes = labels.to(device), classes.to(device)

    def step(indices: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        indices = ctx.shard(indices).to(device)
        pred, log_var = net(old[indices], side_info[indices])
        pred, log_var = pred.float(), log_var.float()
        nll = gaussian_nll(pred, log_var, new[indices], cfg.beta)
        logs = {
            "nll": float(nll.detach()),
            "mse": float((pred.detach() - new[indices]).square().mean()),
        }
        loss = nll
        if use_p2c:
            p2c = point_to_cluster(pred, labels[indices], classifier, classes)
            loss = loss + cfg.p2c_weight * p2c
            logs["p2c"] = float(p2c.detach())
        return loss, logs

    result = run_training(
        net,
        None,
        len(old),
        step,
        cfg.optim,
        seed=seed,
        device=device,
        checkpoint=checkpoint,
        fingerprint=fingerprint,
        desc=desc,
    )
    return unwrap(net).inner, result


@torch.no_grad()
def predict_with_uncertainty(
    model: nn.Module,
    old: torch.Tensor,
    side_info: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 8192,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(embedding [N, d], log_variance [N])`` in batches, eval mode, on CPU tensors."""
    device = torch.device(device)
    model.eval().to(device)
    embs, log_vars = [], []
    for s in range(0, len(old), batch_size):
        e, v = model.predict(
            old[s : s + batch_size].to(device), side_info[s : s + batch_size].to(device)
        )
        embs.append(e.float().cpu())
        log_vars.append(v.float().cpu())
    return torch.cat(embs), torch.cat(log_vars)
