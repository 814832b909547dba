"""DDP built on the stream its forwards run on (no AccumulateGrad stream mismatch on CUDA)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import DDPStrategy
from torch.nn import Module
from torch.nn.parallel import DistributedDataParallel


class CurrentStreamDDPStrategy(DDPStrategy):
    """Lightning's `DDPStrategy`, except that `DistributedDataParallel` is constructed on the current CUDA stream.

    Lightning builds DDP inside `torch.cuda.stream(torch.cuda.Stream())`; DDP's reducer then creates (and keeps)
    every parameter's AccumulateGrad node on that side stream, while the forwards and backwards run on the default
    stream. Each backward then syncs the two streams and PyTorch warns "The AccumulateGrad node's stream does not
    match the stream of the node that produced the incoming gradient", whose own advice is to "ensure that DDP
    initialization is performed under the same stream as subsequent forwards" (what this does).
    """

    def _setup_model(self, model: Module) -> DistributedDataParallel:
        return DistributedDataParallel(
            module=model, device_ids=self.determine_ddp_device_ids(), **self._ddp_kwargs
        )


def build_ddp_on_current_stream(strategy: Any) -> None:
    """Turn a plain `DDPStrategy` (`strategy: ddp`, `ddp_spawn`, ...) into `CurrentStreamDDPStrategy` in place
    (same state, one method differs); any other strategy is left as it is."""
    if type(strategy) is DDPStrategy:
        strategy.__class__ = CurrentStreamDDPStrategy
