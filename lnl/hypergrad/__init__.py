"""Meta-gradient engine shared by the bi-level methods (docs/design.md): method-agnostic plain functions."""

from lnl.hypergrad.distributed import all_reduce_grads, all_reduce_mean, all_reduce_mean_dict, world_size
from lnl.hypergrad.functional import (
    clone_buffers,
    frozen_buffers,
    functional_forward,
    named_params,
    snapshot_buffers,
    snapshot_params,
)
from lnl.hypergrad.jvp import (
    log_probs,
    logprob_jvp,
    loss_jvp,
    output_jvp,
)
from lnl.hypergrad.metagrad import (
    clean_grad,
    effective_lrs,
    kstep_coefficients,
    kstep_denominators,
    kstep_surrogate,
    onestep_surrogate,
    scale_tangent,
    sgd_lookahead,
    sgd_step_fn,
    soft_target_surrogate,
    unrolled_metagrad,
    weight_surrogate,
)
from lnl.hypergrad.weights import (
    l2rw_weights,
    lookahead,
    virtual_step,
    weight_coefficients,
    weight_sensitivities,
    weighted_loss,
)

__all__ = [
    "all_reduce_grads",
    "all_reduce_mean",
    "all_reduce_mean_dict",
    "world_size",
    "clone_buffers",
    "frozen_buffers",
    "functional_forward",
    "named_params",
    "snapshot_buffers",
    "snapshot_params",
    "log_probs",
    "logprob_jvp",
    "loss_jvp",
    "output_jvp",
    "clean_grad",
    "effective_lrs",
    "kstep_coefficients",
    "kstep_denominators",
    "kstep_surrogate",
    "onestep_surrogate",
    "scale_tangent",
    "sgd_lookahead",
    "sgd_step_fn",
    "soft_target_surrogate",
    "unrolled_metagrad",
    "weight_surrogate",
    "l2rw_weights",
    "lookahead",
    "virtual_step",
    "weight_coefficients",
    "weight_sensitivities",
    "weighted_loss",
]
