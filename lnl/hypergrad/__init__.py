"""Meta-gradient engine shared by the bi-level methods (DESIGN 2, 4): method-agnostic plain functions."""

from lnl.hypergrad.distributed import all_reduce_grads, all_reduce_mean, all_reduce_mean_dict, world_size
from lnl.hypergrad.functional import (
    clone_buffers,
    frozen_buffers,
    functional_forward,
    named_params,
    restore_params_,
    snapshot_buffers,
    snapshot_params,
)
from lnl.hypergrad.jvp import (
    log_probs,
    logprob_jvp,
    logprob_jvp_double_backward,
    loss_jvp,
    output_jvp,
    output_jvp_double_backward,
)
from lnl.hypergrad.metagrad import (
    clean_grad,
    effective_lrs,
    kstep_coefficients,
    kstep_surrogate,
    onestep_surrogate,
    scale_tangent,
    sgd_lookahead,
    sgd_step_fn,
    soft_target_surrogate,
    unrolled_metagrad,
    weight_surrogate,
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
    "restore_params_",
    "snapshot_buffers",
    "snapshot_params",
    "log_probs",
    "logprob_jvp",
    "logprob_jvp_double_backward",
    "loss_jvp",
    "output_jvp",
    "output_jvp_double_backward",
    "clean_grad",
    "effective_lrs",
    "kstep_coefficients",
    "kstep_surrogate",
    "onestep_surrogate",
    "scale_tangent",
    "sgd_lookahead",
    "sgd_step_fn",
    "soft_target_surrogate",
    "unrolled_metagrad",
    "weight_surrogate",
]
