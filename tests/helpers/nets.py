"""Tiny float64 nets shared by the hypergrad tests (a BN-free MLP, a conv net with train-mode BatchNorm, a q-net)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

C = 4


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 5, 8), nn.Tanh(), nn.Linear(8, C)).double().train()


def bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3),
        nn.BatchNorm2d(3),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(3 * 3 * 3, 6),
        nn.BatchNorm1d(6),
        nn.Tanh(),
        nn.Linear(6, C),
    )
    net = net.double().train()
    with torch.no_grad():  # non-trivial affine BN parameters and running statistics
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
    return net


class QNet(nn.Module):
    """Soft targets q(x, ỹ; α) = w·onehot(ỹ) + (1 − w)·softmax(A x + b), w = sigmoid(g·x) (a gated corrector)."""

    def __init__(self, seed: int = 1) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.cls = nn.Linear(50, C)
        self.gate = nn.Linear(50 + C, 1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = x.flatten(1)
        onehot = F.one_hot(y, C).to(h.dtype)
        w = torch.sigmoid(self.gate(torch.cat([h, onehot], 1)))
        return w * onehot + (1 - w) * F.softmax(self.cls(h), -1)


def batch(seed: int, n: int = 6) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 5, 5, generator=g, dtype=torch.float64), torch.randint(0, C, (n,), generator=g)


def rel_err(a: list[Tensor] | Tensor, b: list[Tensor] | Tensor) -> float:
    a = torch.cat([t.reshape(-1) for t in a]) if isinstance(a, list | tuple) else a.reshape(-1)
    b = torch.cat([t.reshape(-1) for t in b]) if isinstance(b, list | tuple) else b.reshape(-1)
    return float((a - b).norm() / b.norm().clamp_min(1e-300))
