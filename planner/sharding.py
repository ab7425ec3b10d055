"""Per-rank memory of sharded and data-parallel runs: DDP, DeepSpeed ZeRO-1/2/3 (with offload) and FSDP.

``shard_state`` takes the unsharded resident state of one replica (weights, gradients, optimizer states,
step temporaries, as ``planner.memory`` counts them for a single device) and returns what one rank holds:
the partitions it owns, the communication buffers it allocates (gradient buckets, all-gathered
parameters) and what offload moves to host RAM.

Sources: ZeRO paper (Rajbhandari et al. 2020, sec. 3); deepspeed/runtime/zero/config.py defaults;
transformers/integrations/deepspeed.py ("auto" values); accelerate's FSDP plugin (FSDP2 ``fully_shard``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from planner.memory import DS_BUCKET_ELEMENTS, FP32, _optimizer_bytes, _Precision

if TYPE_CHECKING:  # pragma: no cover
    from planner.memory import TrainSetup, _Params
    from planner.model_spec import ModelSpec


@dataclass(frozen=True)
class Sharded:
    """One rank's share of the resident state, plus its communication buffers."""

    weights: int
    grads: int
    optim: int
    step_tmp: int
    gather: int  # bytes alive during forward/backward for communication (all-gather, buckets)
    cpu: int  # host RAM taken by offload
    prec: _Precision  # the precision policy the sharded recipe actually runs
    stage: int  # 0 (DDP/single), 1-3 (ZeRO stage; FSDP full shard counts as 3)
    n: int  # ranks the state is partitioned over


def shard_state(spec: ModelSpec, setup: TrainSetup, p: _Params, prec: _Precision, layers: int, *,
                weights: int, grads: int, optim: int, step_tmp: int) -> Sharded:
    full = setup.method == "full"
    zero = setup.distribution in ("zero1", "zero2", "zero3")
    n = setup.gpus if setup.distribution in ("zero1", "zero2", "zero3", "fsdp") else 1
    if full and zero and setup.dtype != "fp32":
        # DeepSpeed mixed precision (ZeRO paper, Rajbhandari et al. 2020, sec. 3): 16-bit params (2) and
        # grads (2) on the GPU, fp32 master weights + Adam m, v (K = 12) in the optimizer partition.
        weights = p.total * 2
        grads = p.trainable * 2
        optim = _optimizer_bytes(setup, p, spec, _Precision(4, 2, 4, True)) + p.trainable * FP32 * (
            setup.optimizer != "sgd")
        prec = _Precision(base=2, compute=2, train=2, autocast=False)
    elif full and setup.distribution == "fsdp" and setup.mixed_precision and setup.dtype != "fp32":
        # FSDP MixedPrecision(param_dtype=16-bit) (accelerate's FSDP plugin): sharded fp32 params, grads
        # and states, but the forward runs on all-gathered 16-bit parameters, not autocast copies.
        prec = _Precision(base=FP32, compute=2, train=FP32, autocast=False)
    cpu = 0
    gather = 0
    stage = setup.zero_stage if zero else (3 if setup.distribution == "fsdp" else 0)
    if stage >= 1:
        optim //= n
    if stage >= 2:
        grads //= n
    layer_params = (p.total - spec.vocab_size * spec.hidden_size * (1 if spec.tie_word_embeddings else 2)) // layers
    if stage >= 3:
        weights //= n
        # all-gathered parameters: the current layer + the prefetched next one, in 16-bit
        gather = 2 * layer_params * min(prec.base, 2 if setup.dtype != "fp32" else 4)
    if setup.distribution == "ddp" or (setup.gpus > 1 and stage in (1, 2)):
        # gradient buckets: DDP copies grads into flat buckets (gradient_as_bucket_view=False);
        # DeepSpeed ZeRO-1/2 reduce buckets of reduce_bucket_size elements (HF auto: hidden**2).
        bucket = grads if setup.distribution == "ddp" else 2 * spec.hidden_size**2 * prec.train
        gather += min(bucket, 2 * DS_BUCKET_ELEMENTS * prec.train)
    if setup.offload_optimizer:
        cpu += optim * n + (p.trainable * FP32 if zero else 0)  # fp32 master grads on host (ZeRO-Offload)
        optim = 0
        step_tmp = 0
    if setup.offload_params and stage >= 3:
        cpu += weights * n
        weights = 0
    return Sharded(weights=weights, grads=grads, optim=optim, step_tmp=step_tmp, gather=gather, cpu=cpu,
                   prec=prec, stage=stage, n=n)
