"""Per-rank memory of sharded and data-parallel runs: DDP, DeepSpeed ZeRO-1/2/3 (with offload) and FSDP2.

``shard_state`` takes the unsharded resident state of one replica (weights, gradients, optimizer states,
step temporaries, as ``planner.memory`` counts them for a single device) and returns what one rank holds:
the partitions it owns, the communication buffers it allocates (gradient buckets, all-gathered
parameters, per phase of the step) and what offload moves to host RAM.

DeepSpeed (deepspeed 0.19, ``deepspeed/runtime/zero``): ``deepspeed_zero_values`` is the one place that
chooses the ``zero_optimization`` values; templates/deepspeed.json.j2 renders them and the estimator reads
them, so what runs is what is estimated. Terms, per rank, with N data-parallel ranks and P (T) total
(trainable) parameters, bf16/fp16 engine:

* ZeRO-1/2 (stage_1_and_2.py ``DeepSpeedZeroOptimizer``): the whole model as flat 16-bit groups
  (``__init__``: ``bit16_groups_flat``), the fp32 master partition (``single_partition_of_fp32_groups``,
  4T/N) and the optimizer states over it; gradients: stage 2 keeps its partition in ``grads_in_partition``
  (``copy_grads_in_partition``, 2T/N), stage 1 the full 16-bit grads until the step; the reduce buckets
  (``setup_buckets``: ``reduce_bucket_size`` elements, two of them with ``overlap_comm`` and
  ``contiguous_gradients``); the step flattens the gradient partition and converts it to fp32 (``step``:
  ``flatten_dense_tensors_aligned(...)``, then ``.to(fp32)``: 2T/N + 4T/N) before the optimizer runs.
* ZeRO-3 (stage3.py ``DeepSpeedZeroOptimizer_Stage3``, partition_parameters.py ``Init``): 16-bit
  parameter partitions (2P/N) plus every parameter below ``stage3_param_persistence_threshold`` elements
  kept whole (parameter_offload.py ``mark_persistent_parameters``: norms, biases); the gradient partition
  buffer (``grad_partitions_flat_buffer``, 2T/N) and one ``reduce_bucket_size`` ipg buffer per dtype
  (``__init__``, IPG); fp32 master + states; the step's fp32 copy of one sub-group's gradient
  (``_prepare_fp32_grad_for_sub_group``, at most ``sub_group_size`` elements). The gathered parameters
  follow the module trace (partitioned_param_coordinator.py), replayed by ``zero3_live_params``: each
  module's parameters are fetched before it runs; every ``fetch_sub_module`` call prefetches up to
  ``stage3_prefetch_bucket_size`` more elements of the trace while fewer than
  ``stage3_max_live_parameters`` are available, so the prefetch runs ahead (small modules such as k/v
  projections are consumed faster than they are fetched) until about that limit is gathered: ~1e9
  elements, 2 GB in bf16, with the defaults; ``__params_to_release`` also keeps a parameter that is used
  again within ``stage3_max_reuse_distance`` elements (the top layers and the lm_head between forward and
  backward). ``step`` releases everything (``_partition_all_parameters``). This is the short-sequence
  term a two-layer gather misses.
* Offload (``offload_optimizer``: stage_1_and_2.py ``cpu_offload``, stage3.py ``offload_optimizer``): fp32
  master, states and fp32 gradients live in host RAM (DeepSpeedCPUAdam); ZeRO-2 sends each reduced
  gradient to the host (``async_accumulate_grad_in_cpu_via_gpu``, through a
  ``temp_grad_buffer_for_gpu_offload`` of the largest parameter), ZeRO-3 keeps its gradient partition buffer
  there; the GPU keeps the 16-bit parameters and the buckets. ``offload_param`` (stage 3) moves the 16-bit
  partitions to the host as well; persistent parameters stay gathered. This works on one GPU
  (ZeRO-Offload, Ren et al. 2021).

FSDP2 (torch ``fully_shard`` as accelerate's fsdp2_prepare_model applies it from
templates/accelerate_config.yaml.j2: one unit per decoder layer, an untied input embedding as its own unit,
the tail [final norm, lm_head (+ tied embedding)] with ``reshard_after_forward=False``, the root):

* sharded parameters, gradients and optimizer states: 1/N of each (torch/distributed/fsdp/_fully_shard/
  _fsdp_param.py ``FSDPParam._init_sharded_param``, dim-0 chunks);
* precision (accelerate/utils/fsdp_utils.py ``fsdp2_prepare_model``): with mixed_precision bf16/fp16,
  every trainable parameter is upcast to fp32 and ``MixedPrecisionPolicy(param_dtype=reduce_dtype=16-bit)``
  all-gathers 16-bit copies; frozen parameters (the LoRA base) keep their dtype; a model holding
  ``Params4bit`` is not upcast (QLoRA: ``bnb_4bit_quant_storage`` must be a float dtype so the packed NF4
  bytes shard and all-gather as they are stored). The compute therefore runs on 16-bit unsharded
  parameters: activations are those of a pure 16-bit model, whatever the master dtype;
* unsharded parameters and buffers, as the traces show them (``_fsdp`` returns them per point of the step,
  ``Sharded.backward``): the tail from the lm_head forward until the lm_head backward (tied: from the
  embedding at the start of the forward; with full fine-tuning the tied embedding re-gathers it at the
  end of backward); in forward the running unit plus its all-gather buffer, which FSDP2 keeps until the
  next unshard; in backward the running unit, the next one prefetched into its all-gather buffer
  (``_fsdp_param_group.py`` ``FSDPParamGroup.pre_backward``, backward prefetch of 1), the previous unit's
  reduce-scatter input (``_fsdp_collectives.py`` ``foreach_reduce``, kept until the next reduce-scatter)
  and, when a unit is done, its unsharded gradients. A tied lm_head's 16-bit gradient waits in autograd's
  input buffer of the shared weight until the embedding's arrives at the end of backward.

Numbers checked against FSDPMemTracker traces (benchmarks/sharding_accuracy.py); the DeepSpeed terms come
from the code above (no trace here: DeepSpeed needs a real accelerator).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from planner.memory import FP32, _optimizer_bytes, _Precision, nf4_bytes

if TYPE_CHECKING:  # pragma: no cover
    from planner.memory import TrainSetup, _Params
    from planner.model_spec import ModelSpec

# DeepSpeed's bucket default (deepspeed/runtime/zero/config.py): reduce_bucket_size and allgather_bucket_size
# 5e8 elements; the DDP term below keeps it as the cap on its gradient-bucket copy.
DS_BUCKET_ELEMENTS = 500_000_000
# DeepSpeed's own defaults (deepspeed/runtime/zero/config.py DeepSpeedZeroConfig) for what ftplan does not
# tie to the model: live-parameter and reuse-distance limits, the optimizer sub-group size.
DS_MAX_LIVE_PARAMETERS = 1_000_000_000
DS_MAX_REUSE_DISTANCE = 1_000_000_000
DS_SUB_GROUP_SIZE = 1_000_000_000


def deepspeed_zero_values(hidden_size: int | None, stage: int) -> dict:
    """The ``zero_optimization`` values ftplan writes into deepspeed.json besides stage and offload, and
    the ones the estimator reads (``_deepspeed``, ``zero3_live_params``).

    The hidden-size ones as transformers' "auto" resolution fills them (transformers/integrations/
    deepspeed.py ``HfTrainerDeepSpeedConfig.trainer_config_finalize``), written out as numbers:
    reduce_bucket_size = h*h, stage3_prefetch_bucket_size = int(0.9*h*h),
    stage3_param_persistence_threshold = 10*h. ``hidden_size=None`` (a model whose config cannot be read
    where the file is rendered) writes "auto" for those three: transformers then fills the same numbers
    from the model at train time. The rest are DeepSpeed's defaults (deepspeed/runtime/zero/config.py
    DeepSpeedZeroConfig), made explicit: the live-parameter and reuse-distance limits (1e9 elements), the
    optimizer sub-group size (1e9), overlap_comm and contiguous_gradients on (the HF example configs)."""
    h2 = hidden_size * hidden_size if hidden_size else None
    out: dict = {"overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": h2 or "auto"}
    if stage == 3:
        out.update({
            "stage3_prefetch_bucket_size": int(0.9 * h2) if h2 else "auto",
            "stage3_param_persistence_threshold": 10 * hidden_size if hidden_size else "auto",
            "stage3_max_live_parameters": DS_MAX_LIVE_PARAMETERS,
            "stage3_max_reuse_distance": DS_MAX_REUSE_DISTANCE,
            "sub_group_size": DS_SUB_GROUP_SIZE,
        })
    return out


@dataclass(frozen=True)
class Sharded:
    """One rank's share of the resident state, plus its communication buffers."""

    weights: int
    grads: int
    optim: int
    step_tmp: int
    gather: int  # bytes alive for communication in the forward/loss phases (gathered params, buckets)
    cpu: int  # host RAM taken by offload
    prec: _Precision  # the precision policy the sharded recipe actually runs
    stage: int  # 0 (DDP/single), 1-3 (ZeRO stage; FSDP full shard counts as 3)
    n: int  # ranks the state is partitioned over
    # this recipe's points in the layers (replacing memory.py's backward-top/-bottom), each
    # (phase name, layers of saved activations, + the layer being recomputed (checkpointing)?, + the
    # transient gradients of a layer's backward?, layers whose gradients exist or -1 for none (forward),
    # communication bytes alive there). Empty: memory.py's own two points with ``gather``.
    backward: tuple = ()
    # bytes gathered at the end of backward (embedding gradient done, before the step); None: gather.
    gather_end: int | None = None


# ---------------------------------------------------------------------------------------------------------
# Shapes shared by both recipes
# ---------------------------------------------------------------------------------------------------------


def _vocab_params(spec: ModelSpec) -> tuple[int, int]:
    """(input embedding, untied lm_head) elements."""
    vh = spec.vocab_size * spec.hidden_size
    pc = spec.param_counts()
    return pc.embeddings, (0 if spec.tie_word_embeddings else max(pc.lm_head, vh))


def _layer_params(spec: ModelSpec) -> int:
    embed, head = _vocab_params(spec)
    return max(0, spec.param_counts().total - embed - head - spec.hidden_size) // spec.num_layers


def _layer_modules(spec: ModelSpec) -> list[tuple[int, int]]:
    """(weight elements, bias elements) of each Linear of one decoder layer, in forward order (the
    gather units of ZeRO-3 and the NF4-quantised tensors of QLoRA)."""
    out = []
    for s in spec.linear_layers():
        w = s.in_features * s.out_features * s.count
        out.append((w, s.count * s.out_features if s.bias else 0))
    return out


def _nf4_layer_bytes(spec: ModelSpec, p: _Params) -> int:
    """Packed NF4 data of one decoder layer's Linear weights (what sharded QLoRA stores and gathers:
    bnb_4bit_quant_storage packs two 4-bit values per byte whatever its dtype)."""
    return -(-p.linear // 2) // spec.num_layers


# ---------------------------------------------------------------------------------------------------------
# DeepSpeed ZeRO-3: the parameter coordinator's live set along the module trace
# ---------------------------------------------------------------------------------------------------------


def zero3_live_params(spec: ModelSpec, values: dict, *, quantized: bool = False) -> tuple[int, int, int]:
    """(loss, backward, persistent) elements of gathered 16-bit parameters on a ZeRO-3 rank.

    Replays deepspeed/runtime/zero/partitioned_param_coordinator.py over the module trace of one step
    (forward: embedding, each layer's Linears, lm_head; backward in reverse): ``fetch_sub_module``
    gathers a module's parameters and prefetches the following ones of the trace until
    ``stage3_prefetch_bucket_size`` elements are in flight (at most ``stage3_max_live_parameters`` live);
    ``release_sub_module`` frees them unless ``__params_to_release`` sees them again within
    ``stage3_max_reuse_distance`` elements. Parameters below ``stage3_param_persistence_threshold``
    (norms, biases) stay gathered on every rank for the whole run (``persistent``). Elements are of the
    16-bit storage: QLoRA's packed NF4 weights (bnb_4bit_quant_storage bf16) hold four values per element."""
    thr = values["stage3_param_persistence_threshold"]
    embed, head = _vocab_params(spec)
    mods = _layer_modules(spec)
    if quantized:
        mods = [(-(-w // 4), b) for w, b in mods]
    persistent = spec.hidden_size * (2 * spec.num_layers + 1)  # RMSNorm/LayerNorm weights
    persistent += sum(b for _, b in mods if b <= thr) * spec.num_layers
    # one module per Linear (weight + a bias above the threshold); a tied lm_head uses the embedding's
    # parameter
    layer = tuple(w + (b if b > thr else 0) for w, b in mods)
    loss, bwd = _zero3_replay(layer, spec.num_layers, embed, head, values["stage3_prefetch_bucket_size"],
                              values["stage3_max_live_parameters"], values["stage3_max_reuse_distance"])
    return loss, bwd, persistent


@lru_cache(maxsize=256)
def _zero3_replay(layer: tuple[int, ...], layers: int, embed: int, head: int, bucket: int, max_live: int,
                  reuse: int) -> tuple[int, int]:
    fwd: list[tuple[str, int]] = [("embed", embed)]
    for k in range(layers):
        fwd += [(f"{k}.{j}", w) for j, w in enumerate(layer)]
    fwd.append(("embed" if not head else "head", head or embed))
    trace = fwd + fwd[::-1]
    size = dict(trace)
    live: set[str] = set()
    peak_loss = peak_bwd = 0
    n_fwd = len(fwd)
    for i, (pid, _) in enumerate(trace):
        live.add(pid)
        # fetch_sub_module: prefetch the next parameters of the trace, up to the bucket per call and while
        # fewer than max_live elements are available
        inflight = 0
        budget = min(bucket, max_live - sum(size[q] for q in live))
        for qid, qn in trace[i + 1:]:
            if inflight >= budget:
                break
            if qid not in live:
                live.add(qid)
                inflight += qn
        total = sum(size[q] for q in live)
        if n_fwd - 1 <= i <= n_fwd:  # lm_head forward / backward: the loss phases
            peak_loss = max(peak_loss, total)
        elif i > n_fwd:
            peak_bwd = max(peak_bwd, total)
        # release_sub_module: free the module's parameter unless it is used again within the reuse distance
        traversed = 0
        keep = False
        for qid, qn in trace[i + 1:]:
            if traversed >= reuse:
                break
            if qid == pid:
                keep = True
                break
            traversed += qn
        if not keep:
            live.discard(pid)
    return peak_loss, peak_bwd


# ---------------------------------------------------------------------------------------------------------
# The per-rank state
# ---------------------------------------------------------------------------------------------------------


def shard_state(spec: ModelSpec, setup: TrainSetup, p: _Params, prec: _Precision, *,
                weights: int, grads: int, optim: int, step_tmp: int) -> Sharded:
    dist = setup.distribution
    if dist in ("zero1", "zero2", "zero3"):
        return _deepspeed(spec, setup, p, prec, weights=weights, grads=grads, optim=optim, step_tmp=step_tmp)
    if dist == "fsdp":
        return _fsdp(spec, setup, p, prec, weights=weights, grads=grads, optim=optim, step_tmp=step_tmp)
    gather = 0
    if dist == "ddp":
        # DDP copies gradients into flat buckets (torch/nn/parallel/distributed.py, gradient_as_bucket_view
        # False): a second copy of every gradient (unchanged from planner.memory's former sharding code)
        gather = min(grads, 2 * DS_BUCKET_ELEMENTS * prec.train)
    return Sharded(weights=weights, grads=grads, optim=optim, step_tmp=step_tmp, gather=gather, cpu=0, prec=prec,
                   stage=0, n=1)


def _deepspeed(spec: ModelSpec, setup: TrainSetup, p: _Params, prec: _Precision, *, weights: int, grads: int,
               optim: int, step_tmp: int) -> Sharded:
    stage, n = setup.zero_stage, setup.gpus
    values = deepspeed_zero_values(spec.hidden_size, stage)
    t = p.trainable
    half = setup.precision != "fp32"
    b = 2 if half else FP32
    meta = 0
    if half:
        # DeepSpeed's bf16/fp16 engine runs the module in 16-bit (engine.py _configure_distributed_model
        # casts the module; ZeRO-3's Init at construction), adapters included: 16-bit weights and
        # gradients, no autocast; the optimizer works on an fp32 master partition
        # (stage_1_and_2.py single_partition_of_fp32_groups / stage3.py fp32_partitioned_groups_flat)
        if prec.quantized:
            packed = -(-p.linear // 2)
            # QuantState: not a parameter, per rank
            meta = nf4_bytes(p.linear, p.linear_tensors, double_quant=setup.double_quant) - packed
            weights = packed + (p.total - p.linear) * b + t * b
        else:
            weights = p.total * b + (t * b if setup.method != "full" else 0)
        grads = t * b
        optim = _optimizer_bytes(setup, p, spec, _Precision(FP32, 2, FP32, False)) + t * FP32
        prec = _Precision(base=b, compute=b, train=b, autocast=False, quantized=prec.quantized,
                          other=b if prec.quantized else 0)
    part = -(-t // n)  # this rank's share of the trainable elements
    # step: the gradient partition flattened (16-bit copy) and converted to fp32 before the optimizer runs
    # (stage_1_and_2.py step: flatten_dense_tensors_aligned(...).to(fp32); stage3.py
    # _prepare_fp32_grad_for_sub_group, per sub_group_size elements)
    sub = min(part, values.get("sub_group_size", part))
    fp32_grad = sub * (b + FP32) if half else 0
    optim //= n
    cpu = 0
    bucket = values["reduce_bucket_size"] * b
    if stage in (1, 2):
        # the full 16-bit model on every rank (bit16_groups_flat); ZeRO-2 keeps only its gradient
        # partition (grads_in_partition), ZeRO-1 every 16-bit gradient until the step; the ipg buckets,
        # two with overlap_comm (setup_buckets), on one GPU too
        if stage == 2:
            grads //= n
        gather = (2 if values["overlap_comm"] else 1) * bucket
        step = step_tmp + fp32_grad
        if setup.offload_optimizer:
            # ZeRO-Offload: master, states and fp32 gradients in host RAM (DeepSpeedCPUAdam steps there);
            # the reduced gradients go to the host as they come (async_accumulate_grad_in_cpu_via_gpu:
            # no grads_in_partition on the GPU), through temp_grad_buffer_for_gpu_offload (largest param)
            cpu = optim * n + t * FP32
            optim = 0
            grads = 0 if stage == 2 else grads
            gather += p.largest * b
            step = 0
        return Sharded(weights=weights, grads=grads, optim=optim, step_tmp=step, gather=gather, cpu=cpu, prec=prec,
                       stage=stage, n=n, backward=_two_points(spec, gather))
    # ZeRO-3: 16-bit partitions (the packed NF4 storage under QLoRA), the gradient partition buffer
    # (grad_partitions_flat_buffer), one ipg buffer; gathered parameters from the coordinator's replay
    loss_el, bwd_el, persistent = zero3_live_params(spec, values, quantized=prec.quantized)
    weights = weights // n + meta
    grads //= n
    gather = (loss_el + persistent) * b
    gather_bwd = (bwd_el + persistent) * b + bucket
    step = step_tmp + fp32_grad
    if setup.offload_optimizer:
        # master, states and the gradient partition buffer on the host (stage3.py: self.device = cpu)
        cpu = optim * n + grads * n + t * FP32
        optim = grads = 0
        step = 0
    if setup.offload_params:
        # the 16-bit partitions on the host; persistent parameters stay gathered on the GPU (in gather)
        cpu += (weights - meta) * n
        weights = meta
    return Sharded(weights=weights, grads=grads, optim=optim, step_tmp=step, gather=gather, cpu=cpu, prec=prec,
                   stage=3, n=n, backward=_two_points(spec, gather_bwd), gather_end=gather_bwd)


def _two_points(spec: ModelSpec, gather: int) -> tuple:
    """memory.py's single-device backward points (top and bottom layer, mid-layer) with ``gather``."""
    L = spec.num_layers
    return (("backward-top", L, True, True, 0, gather), ("backward-bottom", 1, True, True, L - 1, gather))


def fsdp_param_dtype(setup: TrainSetup) -> int:
    """Bytes of the all-gathered parameters: accelerate's MixedPrecisionPolicy(param_dtype) for a 16-bit
    mixed precision, else the stored dtype."""
    return 2 if setup.precision != "fp32" else FP32


def _fsdp(spec: ModelSpec, setup: TrainSetup, p: _Params, prec: _Precision, *, weights: int, grads: int,
          optim: int, step_tmp: int) -> Sharded:
    n = setup.gpus
    pd = fsdp_param_dtype(setup)  # all-gather dtype (param_dtype) and reduce-scatter dtype (reduce_dtype)
    full = setup.method == "full"
    t = p.trainable
    L = spec.num_layers
    if full and setup.precision != "fp32" and not setup.mixed_precision:
        # A 16-bit model still trains fp32 state under FSDP2: the executor's TrainingArguments(bf16/fp16)
        # make accelerate's mixed_precision 16-bit, and fsdp2_prepare_model then upcasts every trainable
        # parameter to fp32 (MixedPrecisionPolicy gathers 16-bit copies). "Pure" 16-bit FSDP never runs.
        weights, grads = p.total * FP32, t * FP32
        optim = _optimizer_bytes(setup, p, spec, _Precision(FP32, 2, FP32, False))
    grad_bytes = grads // max(1, t)  # sharded gradient dtype (fp32 after accelerate's upcast, LoRA fp32)
    embed, head = _vocab_params(spec)
    tied = not head
    meta = 0
    if prec.quantized:
        # Params4bit with a float bnb_4bit_quant_storage: the packed NF4 data shards like any parameter;
        # each rank keeps the QuantState (absmax, code: not parameters) whole
        packed = -(-p.linear // 2)
        meta = nf4_bytes(p.linear, p.linear_tensors, double_quant=setup.double_quant) - packed
        other = (p.total - p.linear) * (prec.other or prec.base)
        weights = (packed + other + t * FP32) // n + meta
        layer_bytes = _nf4_layer_bytes(spec, p) + (_layer_params(spec) - p.linear // L) * pd
    else:
        weights //= n
        layer_bytes = _layer_params(spec) * pd
    if not full:
        layer_bytes += t // L * pd  # adapters, all-gathered in the param dtype
    grads //= n
    optim //= n
    # the tail unit [norm, lm_head (+ tied embedding)], reshard_after_forward=False: gathered from the
    # lm_head forward (tied: from the embedding at the start) until its post-backward
    tail = (head or embed) * pd + spec.hidden_size * pd
    # a unit's reduce-scatter input (foreach_reduce: its unsharded gradients copied flat, reduce_dtype);
    # FSDP2 keeps it (reduce_scatter_state) until the next unit's reduce-scatter
    layer_rs = (_layer_params(spec) if full else t // L) * pd
    # The lm_head gradient (full fine-tuning). Untied: the tail's post-backward reduce-scatters it into an
    # fp32 shard (memory.py counts V*h*pd/N: the difference goes here) and its reduce-scatter buffer stays
    # until the top layer's. Tied: autograd holds the lm_head contribution in the shared weight's input
    # buffer (16-bit, V*h) until the embedding's contribution arrives at the very end; the tail itself is
    # resharded (traced). A frozen tail (LoRA) is resharded once the top layer's backward starts.
    if full and tied:
        head_fix, head_rs = embed * pd - embed * pd // n, 0
    elif full:
        head_fix, head_rs = head * (grad_bytes - pd) // n, head * pd
    else:
        head_fix = head_rs = 0
    names = {0: "backward-bottom", 1: "backward-low", L - 2: "backward-second", L - 1: "backward-top"}
    points = []
    for k in sorted({k for k in (L - 1, L - 2, 1, 0) if k >= 0}, reverse=True):
        # the unit running backward unsharded, the next one (layer k-1; below layer 0 the untied
        # embedding, when it trains) prefetched in its all-gather buffer, the reduce-scatter buffer of the
        # unit above (the tail's for the top layer)
        prefetch = layer_bytes if k > 0 else (embed * pd if full and not tied else 0)
        above = head_rs if k == L - 1 else layer_rs
        g = layer_bytes + prefetch + above + head_fix
        name = names[k]
        points.append((name, k + 1, True, True, L - 1 - k, g))
        # layer k done: its activations freed, its unsharded gradients all there, about to be copied into
        # its reduce-scatter input
        points.append((name + "-done", k, False, False, L - 1 - k, g + layer_rs))
    # forward of the last layer: every layer's activations (the last one's being made), that layer
    # unsharded and its all-gather buffer (FSDP2 keeps it until the next unshard), the tied tail (gathered
    # with the embedding at the start)
    points.insert(0, ("forward-last-layer", L, setup.gradient_checkpointing, False, -1,
                      2 * layer_bytes + (tail if tied else 0)))
    # start of the top layer's backward: its all-gather in flight, a frozen tail still gathered
    points.insert(1, ("backward-start", L, False, False, 0, layer_bytes + head_rs + head_fix + (0 if full else tail)))
    # end of backward, before the step: tied (full): the tail still gathered and the embedding gradient's
    # third 16-bit copy (memory.py counts two), its sharded gradient not yet there; untied (full): the
    # embedding unit gathered + its unsharded gradient. Plus layer 0's reduce-scatter buffer.
    if full and tied:
        gather_end = tail + embed * pd - (embed + spec.hidden_size) * grad_bytes // n + layer_rs
    elif full:
        gather_end = 2 * embed * pd - embed * grad_bytes // n + layer_rs
    else:
        gather_end = (tail if tied else 0) + layer_rs
    # compute on 16-bit unsharded parameters, no autocast copies (param_dtype policy)
    if setup.precision != "fp32":
        prec = _Precision(base=pd, compute=pd, train=pd if full else prec.train, autocast=False,
                          quantized=prec.quantized, other=pd if prec.quantized else 0)
    cpu = 0
    if setup.offload_optimizer or setup.offload_params:
        # FSDP2 CPUOffloadPolicy (accelerate fsdp_offload_params, rendered for either offload setting)
        # offloads sharded parameters, gradients and the optimizer step together; a QLoRA QuantState is not
        # a parameter and stays on the GPU
        keep = meta if prec.quantized else 0
        cpu = (weights - keep + grads + optim) * n
        weights, grads, optim = keep, 0, 0
        step_tmp = 0
    return Sharded(weights=weights, grads=grads, optim=optim, step_tmp=step_tmp, gather=tail, cpu=cpu,
                   prec=prec, stage=3, n=n, backward=tuple(points), gather_end=gather_end)
