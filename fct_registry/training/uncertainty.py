"""Training an uncertainty-aware transformation (FastFill): a Gaussian NLL on each item's
alignment loss, optionally with FastFill's point-to-cluster term in it.

Per item ``i`` the alignment loss is ``a_i = ||mu_i - y_i||^2 / d + w * ce_i``: the squared error
per dimension between the transformed and the true new embedding, plus (``p2c_weight`` w > 0) the
point-to-cluster term ``ce_i`` (FastFill Sec. 3.2), the cross-entropy of the *frozen* new model's
classifier on the transformed embedding against the item's label. With the predicted
log-variance ``s_i`` the loss is ``0.5 * (a_i * exp(-s_i) + s_i)``, whose minimum over ``s_i`` is
at ``exp(s_i) = a_i``: the head learns the item's expected alignment loss. The squared error
alone ranks items by how far they land from their target; the cross-entropy adds whether they
land in the wrong class cluster, which is what a search gets wrong (on the default family it
lifts the uncertainty order's backfilling lead over random; README "Partial backfill").

Plain NLL scales the embedding's gradient by ``1/sigma_i^2``, which starves hard items of
learning and costs retrieval accuracy; ``beta`` applies beta-NLL (Seitzer et al., ICLR 2022):
each item's loss is weighted by ``stopgrad(sigma_i^2)^beta``, so ``beta=1`` gives the embedding
exactly the gradient of ``a_i`` (up to a constant) while the head still learns ``a_i``. With
``p2c_trains_embedding`` false (the default) the cross-entropy is detached from the embedding and
only the head learns from it; with ``detach_variance`` (the default) the head sends no gradient
into the shared trunk. Both together train the embedding exactly as the plain transformation's:
jointly trained (beta=1) on the default family the uncertainty model's training MSE was ~14%
above the plain one's at the same epoch, which costs transform-only accuracy. Items whose class
the new model was not trained on contribute no cross-entropy.
"""

from __future__ import annotations

from typing import Unpack

import torch
from torch import nn
from torch.nn import functional

from fct_registry.config import OptimConfig, UncertaintyConfig
from fct_registry.errors import ConfigError
from fct_registry.model_specs import TransformationSpec
from fct_registry.models.uncertainty import KIND, WithUncertainty, predicts_uncertainty
from fct_registry.training.distributed import context
from fct_registry.training.loop import LoopResult, RunArgs, fit, seeded_model


def loss_nll(loss: torch.Tensor, log_var: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """Mean over items of ``0.5 * (loss_i * exp(-s_i) + s_i)`` for per-item losses ``loss [N]``
    and log-variances ``s [N]``, each item weighted by ``stopgrad(exp(s_i))**beta`` (beta-NLL)."""
    nll = 0.5 * (loss * torch.exp(-log_var) + log_var)
    if beta:
        nll = nll * torch.exp(beta * log_var.detach())
    return nll.mean()


def gaussian_nll(
    pred: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor, beta: float = 0.0
) -> torch.Tensor:
    """The per-dimension isotropic Gaussian NLL (constants dropped) of ``target`` around
    ``pred``: :func:`loss_nll` of the squared error per dimension."""
    return loss_nll((pred - target).square().mean(dim=1), log_var, beta)


def point_to_cluster(
    pred: torch.Tensor, labels: torch.Tensor, classifier: nn.Module, class_index: torch.Tensor
) -> torch.Tensor:
    """Per-item cross-entropy ``[N]`` of the frozen new classifier on the transformed embeddings.

    ``class_index[label]`` is the classifier's output index of a dataset label, -1 for labels
    the new model was not trained on (their cross-entropy is 0)."""
    target = class_index[labels]
    return functional.cross_entropy(classifier(pred), target, ignore_index=-1, reduction="none")


def class_index(classes: list[int] | None, num_labels: int) -> torch.Tensor:
    """Dataset label -> classifier output index (``classes``: the version's training classes,
    None for all); -1 where the version has no output for a label."""
    index = torch.full((num_labels,), -1, dtype=torch.long)
    chosen = list(range(num_labels)) if classes is None else classes
    for i, c in enumerate(chosen):
        index[c] = i
    return index


def train_uncertainty_transformation(
    cfg: UncertaintyConfig,
    optim: OptimConfig,
    old: torch.Tensor,
    side_info: torch.Tensor,
    new: torch.Tensor,
    spec: TransformationSpec,
    *,
    labels: torch.Tensor | None = None,
    classifier: nn.Module | None = None,
    classes: torch.Tensor | None = None,
    **run: Unpack[RunArgs],
) -> tuple[nn.Module, LoopResult]:
    """Train ``spec.type`` (an uncertainty-predicting kind) on stored training embeddings
    with ``optim``.

    With ``cfg.p2c_weight > 0`` pass ``labels`` (dataset labels of the training rows), the new
    model's ``classifier`` (kept frozen) and ``classes`` (from :func:`class_index`).
    """
    model = seeded_model(spec, run["seed"])
    if not predicts_uncertainty(model):
        raise ConfigError(
            f"transformation kind {spec.type!r} predicts no uncertainty; use {KIND!r}"
        )
    use_p2c = cfg.p2c_weight > 0
    if use_p2c and (labels is None or classifier is None or classes is None):
        raise ConfigError(
            "p2c_weight > 0 needs the training labels, the new model's classifier and its "
            "class index; pass them, or set p2c_weight: 0"
        )
    model.detach_variance = cfg.detach_variance
    device, ctx = run["device"], context()
    old, side_info, new = old.to(device), side_info.to(device), new.to(device)
    if use_p2c:
        classifier = classifier.to(device).eval().requires_grad_(False)
        labels, classes = labels.to(device), classes.to(device)

    def step(
        net: nn.Module, indices: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        indices = ctx.shard(indices).to(device)
        pred, log_var = net(old[indices], side_info[indices])
        pred, log_var = pred.float(), log_var.float()
        err = (pred - new[indices]).square().mean(dim=1)
        align, logs = err, {"mse": float(err.detach().mean())}
        if use_p2c:
            p2c = point_to_cluster(pred, labels[indices], classifier, classes)
            logs["p2c"] = float(p2c.detach().mean())
            align = err + cfg.p2c_weight * (p2c if cfg.p2c_trains_embedding else p2c.detach())
        loss = loss_nll(align, log_var, cfg.beta)
        logs["nll"] = float(loss.detach())
        return loss, logs

    # The two-output view is what fit wraps, so DDP sees (and syncs) the real forward.
    trained, result = fit(WithUncertainty(model), step, len(old), optim, **run)
    return trained.inner, result


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
