import math

import torch

from fct_registry.training.contrastive import nt_xent


def _nt_xent_loop(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """NT-Xent by its definition: for each of the 2N views, -log softmax of its positive."""
    z = torch.cat([z1, z2])
    z = z / z.norm(dim=1, keepdim=True)
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        num = math.exp(float(z[i] @ z[pos]) / t)
        den = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n2) if k != i)
        total += -math.log(num / den)
    return total / n2


def test_nt_xent_matches_definition():
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 7), torch.randn(5, 7)
    for t in (0.1, 0.5, 1.0):
        assert abs(float(nt_xent(z1, z2, t)) - _nt_xent_loop(z1, z2, t)) < 1e-4


def test_nt_xent_prefers_aligned_views():
    torch.manual_seed(0)
    z = torch.randn(8, 16)
    assert nt_xent(z, z + 0.01 * torch.randn_like(z), 0.5) < nt_xent(z, torch.randn(8, 16), 0.5)
