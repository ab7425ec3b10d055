"""VRAM per GPU of a fine-tuning run, as a breakdown in bytes.

TrainSetup and MemoryBreakdown below are what cost, the rules, render and the executor read.

``estimate_memory(spec, setup)`` is analytic and instant (no torch). It models what one training step
of the executor allocates with transformers 5.x + torch AdamW (fused, the Trainer default for
torch >= 2.8: transformers/training_args.py) + peft + bitsandbytes, tensor by tensor:

* the resident state: weights, gradients, optimizer states (``_states``);
* the tensors autograd saves in the forward pass, per decoder layer (``_layer_saved``), read off the
  transformers/peft modeling code and checked with ``torch.autograd.graph.saved_tensors_hooks`` on
  fake-tensor models of the development set (see benchmarks/memory_accuracy.py DEV_MODELS);
* the transient tensors of each phase of the step (``_phases``): the loss (logits, their fp32 upcast,
  log-softmax and its gradient), the backward pass walking down the layers while gradients pile up,
  and the optimizer step. ``peak_allocated`` is the largest phase, not the sum of everything.

The precision policy it assumes (the executor's; see ``_precision``):
  full + dtype 16-bit, no mixed precision: model loaded in that dtype, no autocast ("pure").
  full + mixed_precision: fp32 model, ``torch.autocast(bf16/fp16)``; autocast caches a 16-bit copy of
      every Linear weight for the forward, which backward keeps until that layer is done.
  lora/dora: base in dtype, adapters in fp32 (peft ``autocast_adapter_dtype=True`` default,
      peft/tuners/tuners_utils.py ``_cast_adapter_dtype``), compute under autocast (Trainer bf16=True).
  qlora: Linear layers in NF4 (bitsandbytes Linear4bit), everything else upcast to fp32 by
      ``peft.prepare_model_for_kbit_training`` (peft/utils/other.py casts every fp16/bf16 parameter that
      is not Params4bit to float32), adapters fp32, bf16 autocast compute.
Assumptions: dropout 0 (Llama/Qwen/Mistral configs). What the trainer does is a TrainSetup field the
rules set from the plan (planner/convert.py trainer_traits): ``fused_loss`` (TRL SFT/DPO trainers:
chunked log-probs, no T x V logits) or ``loss = model(**batch).loss`` (plain Trainer; logits dropped
before backward); ``padding_mask`` (padded batches: a 4D mask and, with GQA, k/v repeated before sdpa;
packed batches have neither: sdpa uses native GQA, transformers/integrations/sdpa_attention.py
use_gqa_in_sdpa); ``reference_model`` (DPO: a frozen copy of the weights with full fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from planner.errors import FtplanError
from planner.overhead import device_overhead
from planner.vocab import (
    ADAPTER_METHODS,
    ATTN_IMPLEMENTATIONS,
    DEFAULT_LORA_ALPHA,
    DEFAULT_LORA_R,
    DISTRIBUTIONS,
    METHODS,
    OPTIMIZERS,
    AttnImplementation,
    Distribution,
    Method,
    Optimizer,
    Precision,
)

if TYPE_CHECKING:  # pragma: no cover
    from planner.model_spec import ModelSpec

# The closed sets (methods, precisions, optimizers, ...) are planner.vocab's, shared with the plan schema
# and the CLI; OPTIMIZERS is re-exported here for the executor's optimizer map.
__all__ = ["OPTIMIZERS", "SAVE_MODULES", "TrainSetup", "MemoryBreakdown", "estimate_memory"]


@dataclass(frozen=True)
class TrainSetup:
    """The knobs that decide memory and time; one strategy = one TrainSetup."""

    method: Method = "lora"
    precision: Precision = "bf16"  # compute dtype (and weight dtype unless mixed_precision)
    mixed_precision: bool = False  # fp32 master weights/grads/optimizer + 16-bit autocast compute
    seq_len: int = 2048
    micro_batch: int = 1  # rows per device per forward (plan.yaml training.micro_batch)
    # sequences the trainer runs per row: 2 for DPO (TRL DPOTrainer concatenates chosen and rejected
    # into one forward, trl/trainer/dpo_trainer.py concatenated_forward), else 1. Set by trainer_traits.
    sequences_per_row: int = 1
    gradient_checkpointing: bool = False
    optimizer: Optimizer = "adamw"
    attn_implementation: AttnImplementation = "sdpa"
    lora_r: int = DEFAULT_LORA_R
    lora_alpha: int = DEFAULT_LORA_ALPHA
    lora_target_modules: tuple[str, ...] = ("all-linear",)  # or module names like ("q_proj", "v_proj")
    num_virtual_tokens: int = 20  # prompt / prefix tuning
    gpus: int = 1  # world size (all nodes)
    distribution: Distribution = "single"
    offload_optimizer: bool = False  # ZeRO / FSDP CPU offload of optimizer states
    offload_params: bool = False  # ZeRO-3 / FSDP CPU offload of parameters
    grad_accum: int = 1
    # peft LoraConfig.lora_dropout. With p > 0 every adapter
    # keeps a 1-byte dropout mask of its input (peft tuners/lora/layer.py: lora_A(dropout(x))).
    lora_dropout: float = 0.0
    # the trainer keeps a reference policy (DPO). With full fine-tuning it is a second, frozen copy
    # of the model (trl DPOTrainer builds ref_model from the same checkpoint when the model is not a peft
    # model); with LoRA/QLoRA the reference is the base with adapters disabled: no copy, nothing counted.
    # Set by the rules for task preference (planner.convert.trainer_traits).
    reference_model: bool = False
    # the loss runs through TRL's fused LM head (trl/trainer/utils.py add_fused_lm_head, used by
    # SFTTrainer and DPOTrainer in TRL 1.16: trl/kernels/chunked_logprob.py ChunkedLogProbFunction), which
    # never materialises the T x V logits: it projects [4096, 32768] tiles and keeps online-logsumexp
    # statistics; backward recomputes each tile and accumulates the hidden and lm_head gradients in fp32.
    # False: ``loss = model(**batch).loss`` (transformers ForCausalLMLoss, full logits), as plain Trainer.
    fused_loss: bool = False
    # batches are padded and carry an attention mask (unpacked SFT, DPO, classification): sdpa then
    # gets a 4D boolean mask [b, 1, s, s] (transformers masking_utils, built once per forward) and on CUDA
    # cannot use native GQA (transformers/integrations/sdpa_attention.py use_gqa_in_sdpa requires
    # attention_mask is None), so k and v are repeated to all heads (repeat_kv) before sdpa saves them.
    # Packed batches (TRL padding-free, position_ids) have no mask.
    padding_mask: bool = False
    # where the step runs. With the fused LM head it matters: CUDA folds each tile in a Triton kernel
    # in place; elsewhere TRL runs the same fold as torch ops (chunked_logprob.py _forward_tile /
    # _backward_tile) that allocate fp32 copies of the tile. Set by the rules ("cpu" without a GPU).
    device: Literal["cuda", "cpu"] = "cuda"
    # QLoRA's fp32 upcast of every non-quantised parameter (peft
    # prepare_model_for_kbit_training). TRL skips that call for sharded QLoRA (FSDP/ZeRO-3 load the 4-bit
    # weights on cpu/meta: trl/models/utils.py prepare_peft_model ``is_sharded_qlora``), so the rules turn it
    # off there; the executor follows this field.
    qlora_upcast: bool = True
    # peft LoraConfig.modules_to_save (e.g. ("embed_tokens", "lm_head") when tokens are added): peft
    # wraps each in ModulesToSaveWrapper, a trainable copy beside the frozen original.
    modules_to_save: tuple[str, ...] = ()
    # tokens added to the tokenizer; the embeddings (and an untied lm_head) are resized by this many
    # rows (transformers resize_token_embeddings).
    added_tokens: int = 0
    # GPU kind (hardware catalog name, e.g. "H100-SXM"): decides the CUDA context and library
    # workspaces of the device total. "" = a generic recent datacenter GPU.
    gpu_kind: str = ""
    # LoRA/DoRA/QLoRA adapter weights: "fp32" (peft get_peft_model's autocast_adapter_dtype=True default) or
    # "model" (autocast_adapter_dtype=False: the base's 16-bit dtype, as torchtune, LitGPT bf16-true and
    # Answer.AI's fsdp_qlora keep them).
    adapter_dtype: Literal["fp32", "model"] = "fp32"
    # QLoRA: NF4 with double quantization of the absmax (bnb_4bit_use_double_quant, the QLoRA paper's).
    double_quant: bool = True

    def with_(self, **changes) -> TrainSetup:
        return replace(self, **changes)

    @property
    def zero_stage(self) -> int:
        return {"zero1": 1, "zero2": 2, "zero3": 3}.get(self.distribution, 0)


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per GPU. ``peak_allocated`` ~ torch.cuda.max_memory_allocated(); ``total`` = what the
    device must have free (peak + allocator fragmentation + CUDA context)."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    temporary: int  # logits + fp32 upcast for the loss, optimizer step buffers, all-gather buffers
    peak_allocated: int
    overhead: int  # CUDA context + caching-allocator reserve
    total: int
    cpu_bytes: int = 0  # host RAM needed by offload (0 without offload)
    notes: tuple[str, ...] = field(default_factory=tuple)
    phase: str = ""  # which phase of the step sets the peak: forward, loss-backward, backward, step
    phases: tuple[tuple[str, int], ...] = ()  # every modelled phase's allocated bytes
    overhead_parts: tuple[tuple[str, int], ...] = ()  # what ``overhead`` is made of (planner.overhead)

    def to_dict(self) -> dict:
        return {
            "weights": self.weights,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "activations": self.activations,
            "temporary": self.temporary,
            "peak_allocated": self.peak_allocated,
            "overhead": self.overhead,
            "total": self.total,
        }


# ---------------------------------------------------------------------------------------------------------
# Constants (each with its source)
# ---------------------------------------------------------------------------------------------------------

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
FP32 = 4

# NF4 (QLoRA paper, Dettmers et al. 2023, sec. 3; bitsandbytes functional.quantize_4bit): 4 bits per
# weight, one absmax per block of 64. Double quantization stores that absmax as 8 bits with one fp32
# second-level absmax per 256 blocks: 8/64 + 32/(64*256) = 0.127 bits/param instead of 32/64 = 0.5.
NF4_BLOCK = 64
NF4_DQ_BLOCK = 256

# bitsandbytes 8-bit blockwise optimizers (Dettmers et al. 2022, "8-bit Optimizers via Block-wise
# Quantization"; bitsandbytes/optim/optimizer.py Optimizer8bit: blocksize 256 in 0.4x, 2048 in older
# releases). Two uint8 states + one fp32 absmax per block each. Tensors with < 4096 elements
# (``min_8bit_size``) keep fp32 states.
BNB_OPT_BLOCK = 256
BNB_MIN_8BIT_SIZE = 4096

# TRL fused LM head tile (trl/kernels/chunked_logprob.py TOKEN_CHUNK_SIZE; trl/trainer/utils.py
# _CHUNKED_LOGPROB_CHUNK_SIZE): one [4096, 32768] compute-dtype buffer reused for every tile.
FUSED_TOKEN_CHUNK = 4096
FUSED_VOCAB_CHUNK = 32768
# Without Triton (CPU) the fold runs as torch ops on the whole tile: tile.float(), exp, products, the
# fp32 gradient and masks. Peak: 7.2 fp32 copies of the [n, chunk] tile, measured with MemTracker on fake
# tensors (tiny Llama, vocab 32000, 2 x 512 tokens, full and LoRA: 7.15 and 7.28 copies;
# benchmarks/fused_head_memory.py, held-out vocab 50000: +1.9% / -0.8%, vocab 8000: -13% / -16%).
FUSED_TORCH_TILE_FP32_COPIES = 7.2

# peft modules_to_save names ftplan models: the token embeddings and the LM head, as transformers names
# them per family (Llama/Qwen/Mistral/Gemma/Phi-3: embed_tokens + lm_head; GPT-2: wte + lm_head;
# GPT-NeoX: embed_in + embed_out). Each is a vocab x hidden matrix.
SAVE_MODULES = {"embed_tokens": "embeddings", "wte": "embeddings", "embed_in": "embeddings",
                "word_embeddings": "embeddings", "lm_head": "head", "embed_out": "head"}


# ---------------------------------------------------------------------------------------------------------
# Precision policy
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Precision:
    base: int  # bytes per frozen (or fully trained) weight element as stored
    compute: int  # activation dtype bytes
    train: int  # bytes per trainable element (and its gradient)
    autocast: bool  # torch.autocast around the forward (16-bit compute over fp32/mixed tensors)
    quantized: bool = False  # QLoRA: decoder Linear weights in NF4
    other: int = 0  # bytes per non-Linear weight (embeddings, norms, lm_head); 0: same as base


def _precision(setup: TrainSetup) -> _Precision:
    c = DTYPE_BYTES[setup.precision]
    if setup.method == "full":
        if setup.mixed_precision:
            return _Precision(base=FP32, compute=2 if c == 2 else 4, train=FP32, autocast=c == 2)
        return _Precision(base=c, compute=c, train=c, autocast=False)
    if setup.method == "qlora":
        # bf16 compute (bnb_4bit_compute_dtype), fp32 adapters and fp32 non-quantized weights.
        # qlora_upcast=False (sharded QLoRA: TRL skips prepare_model_for_kbit_training) keeps them in dtype.
        # adapter_dtype "model": 16-bit adapters; peft still casts each input to the adapter dtype (a saved
        # 16-bit copy of the fp32 norm outputs), as the autocast path counts.
        return _Precision(base=c, compute=2 if c == 2 else 4, train=FP32 if setup.adapter_dtype == "fp32" else c,
                          autocast=c == 2, quantized=True, other=FP32 if setup.qlora_upcast else c)
    if setup.adapter_dtype == "model" and setup.method in ("lora", "dora"):
        # 16-bit adapters on a 16-bit base: no dtype change anywhere, so no cast copies: lora_A saves the module
        # input itself, shared by the modules that read it (the no-autocast path of _layer_saved).
        return _Precision(base=c, compute=c, train=c, autocast=False)
    # LoRA/DoRA/IA3/prompt/prefix: frozen base in dtype, trainable adapter in fp32.
    return _Precision(base=c, compute=c, train=FP32, autocast=c == 2)


# ---------------------------------------------------------------------------------------------------------
# Dimensions
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dims:
    b: int  # micro-batch
    s: int  # sequence length (incl. virtual tokens for prompt/prefix tuning)
    h: int
    q: int  # heads * head_dim
    kv: int  # kv_heads * head_dim
    i: int  # intermediate size (per expert for MoE)
    heads: int
    kv_heads: int
    V: int
    L: int

    @property
    def T(self) -> int:
        return self.b * self.s


def _dims(spec: ModelSpec, setup: TrainSetup) -> _Dims:
    s = setup.seq_len + (setup.num_virtual_tokens if setup.method == "prompt" else 0)
    return _Dims(
        b=setup.micro_batch * setup.sequences_per_row, s=s, h=spec.hidden_size,
        q=spec.num_attention_heads * spec.head_dim,
        kv=spec.num_kv_heads * spec.head_dim, i=spec.intermediate_size, heads=spec.num_attention_heads,
        kv_heads=spec.num_kv_heads, V=spec.vocab_size, L=spec.num_layers,
    )


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------

_CHOICES = {
    "method": METHODS,
    "precision": tuple(DTYPE_BYTES),
    "optimizer": OPTIMIZERS,
    "attn_implementation": ATTN_IMPLEMENTATIONS,
    "distribution": DISTRIBUTIONS,
    "device": ("cuda", "cpu"),
    "adapter_dtype": ("fp32", "model"),
}


def validate_setup(spec: ModelSpec, setup: TrainSetup) -> None:
    """Raise FtplanError (one line naming the field and the fix) for impossible setups."""
    for name, choices in _CHOICES.items():
        value = getattr(setup, name)
        if value not in choices:
            raise FtplanError(f"{name}={value!r} is not supported", hint=f"choose one of {', '.join(choices)}")
    for name in ("seq_len", "micro_batch", "sequences_per_row", "gpus", "grad_accum", "lora_r", "num_virtual_tokens"):
        value = getattr(setup, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise FtplanError(f"{name}={value!r} must be a positive integer")
    if isinstance(setup.added_tokens, bool) or not isinstance(setup.added_tokens, int) or setup.added_tokens < 0:
        raise FtplanError(f"added_tokens={setup.added_tokens!r} must be a non-negative integer")
    unknown = [m for m in setup.modules_to_save if m not in SAVE_MODULES]
    if unknown:
        raise FtplanError(f"modules_to_save: {', '.join(unknown)} is not modelled",
                          hint=f"use {', '.join(sorted(SAVE_MODULES))}")
    if setup.modules_to_save and setup.method not in ADAPTER_METHODS:
        raise FtplanError(f"modules_to_save applies to LoRA/DoRA/QLoRA, not method={setup.method}",
                          hint="full fine-tuning already trains every module")
    if not 0.0 <= setup.lora_dropout < 1.0:
        raise FtplanError(f"lora_dropout={setup.lora_dropout!r} must be in [0, 1)")
    if setup.method in ADAPTER_METHODS and setup.lora_r > spec.hidden_size:
        raise FtplanError(
            f"lora_r={setup.lora_r} is larger than the hidden size {spec.hidden_size} of {spec.name}",
            hint="use a rank well below the hidden size, e.g. 8-64",
        )
    if setup.distribution in ("fsdp", "ddp") and setup.gpus < 2:
        # DeepSpeed ZeRO runs on one GPU (for its CPU offload); FSDP and DDP need a second rank
        raise FtplanError(f"distribution {setup.distribution} needs gpus >= 2 (got {setup.gpus})",
                          hint="use --gpus 2 or more, or DeepSpeed --zero with --offload on one GPU")
    offload_ok = ("zero1", "zero2", "zero3", "fsdp") if not setup.offload_params else ("zero3", "fsdp")
    if (setup.offload_optimizer or setup.offload_params) and setup.distribution not in offload_ok:
        raise FtplanError(
            "CPU offload needs DeepSpeed ZeRO (optimizer: stage 1-3, parameters: stage 3) or FSDP",
            hint="add --zero 3 (or --fsdp) with --offload",
        )
    if setup.offload_params and setup.distribution == "zero2":
        raise FtplanError("parameter offload needs ZeRO stage 3", hint="use --zero 3 --offload")
    if setup.method == "qlora" and setup.distribution in ("zero3", "fsdp") and setup.precision == "fp32":
        raise FtplanError("QLoRA needs a 16-bit compute dtype", hint="use --precision bf16")


# ---------------------------------------------------------------------------------------------------------
# Resident state: weights, gradients, optimizer
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Params:
    total: int
    trainable: int
    linear: int  # decoder Linear weights (what bitsandbytes quantizes)
    linear_tensors: int  # how many Linear modules (per-tensor NF4 metadata)
    largest: int  # largest single trainable tensor (optimizer step temporaries)


def _trainable(spec: ModelSpec, setup: TrainSetup) -> int:
    if setup.method == "full":
        return spec.param_counts().total
    if setup.method in ADAPTER_METHODS:
        return spec.lora_trainable_params(setup.lora_target_modules, setup.lora_r, dora=setup.method == "dora")
    if setup.method == "prompt":
        return spec.prompt_tuning_params(setup.num_virtual_tokens)
    if setup.method == "prefix":
        return spec.prefix_tuning_params(setup.num_virtual_tokens)
    if setup.method == "ia3":
        # peft IA3 defaults (utils/constants.py): scaling vectors on k_proj, v_proj outputs and on the
        # down_proj input (feed-forward); GPT-2: c_attn output and mlp.c_proj input.
        total = 0
        for shapes, layers in spec.layer_groups():
            for s in shapes:
                if s.name in ("k_proj", "v_proj", "qkv_proj") or s.path == "attn.c_attn":
                    total += s.out_features * s.count * layers
                elif s.name == "down_proj" or s.path == "mlp.c_proj":
                    total += s.in_features * s.count * layers
        return total
    raise FtplanError(f"method={setup.method!r} is not supported")


def resized(spec: ModelSpec, added_tokens: int) -> ModelSpec:
    """``spec`` after ``resize_token_embeddings(vocab + added_tokens)``: the embedding (and an untied
    lm_head) gain one row per added token (transformers PreTrainedModel.resize_token_embeddings)."""
    if not added_tokens:
        return spec
    c = spec.counted
    if c is not None:
        rows = added_tokens * spec.hidden_size
        c = replace(c, embeddings=c.embeddings + rows, lm_head=c.lm_head + (rows if c.lm_head else 0))
    return replace(spec, vocab_size=spec.vocab_size + added_tokens, counted=c)


def unquantized_expert_params(spec: ModelSpec) -> int:
    """MoE expert weights stored as fused 3D parameters (transformers 5, e.g. MixtralExperts.gate_up_proj),
    which bitsandbytes leaves unquantized under QLoRA (it replaces nn.Linear/Conv1D only)."""
    return sum(n * sum(s.params for s in shapes if s.kind == "param" and s.role == "expert")
               for shapes, n in spec.layer_groups())


def _saved_module_params(spec: ModelSpec, setup: TrainSetup) -> int:
    """Elements of the trainable copies peft makes for ``modules_to_save`` (ModulesToSaveWrapper deep-copies
    the module beside the frozen original; a tied lm_head/embedding pair becomes two copies)."""
    kinds = {SAVE_MODULES[m] for m in setup.modules_to_save}
    return len(kinds) * spec.vocab_size * spec.hidden_size


def _params(spec: ModelSpec, setup: TrainSetup) -> _Params:
    counts = spec.param_counts()
    groups = spec.layer_groups()  # (one layer's modules, how many layers alike): dense and MoE layers differ
    layers = [s for shapes, _ in groups for s in shapes]
    # What bitsandbytes quantizes: nn.Linear / Conv1D weights only (transformers integrations/bitsandbytes.py
    # replace_with_bnb_linear; quantizer_bnb_4bit.param_needs_quantization: ``isinstance(module,
    # bnb.nn.Linear4bit)``). transformers 5 stores MoE experts as fused 3D nn.Parameters (e.g.
    # MixtralExperts.gate_up_proj): they stay in the load dtype, checked on a tiny Mixtral on CPU.
    linear = sum(n * sum(s.in_features * s.out_features * s.count for s in shapes if s.kind != "param")
                 for shapes, n in groups)
    tensors = sum(n * sum(s.count for s in shapes if s.kind != "param") for shapes, n in groups)
    trainable = _trainable(spec, setup)
    if setup.method == "full":
        largest = max([spec.vocab_size * spec.hidden_size] + [s.in_features * s.out_features * s.count
                                                               for s in layers])
    else:
        largest = trainable // max(1, spec.num_layers)
    return _Params(counts.total, trainable, linear, tensors, largest)


def nf4_bytes(numel: int, tensors: int = 1, *, double_quant: bool = True) -> int:
    """Storage of ``numel`` weights in NF4 over ``tensors`` Linear4bit modules: packed 4-bit data,
    per-block absmax (uint8 + nested fp32 absmax and offset with double quantization, else fp32)."""
    blocks = -(-numel // NF4_BLOCK)
    data = -(-numel // 2)
    # per tensor: the 16-entry fp32 NF4 code (QuantState.code); with double quantization also the
    # 256-entry fp32 dynamic map of the nested state and the fp32 offset (bitsandbytes QuantState).
    if double_quant:
        absmax = blocks + 4 * -(-blocks // NF4_DQ_BLOCK) + tensors * (4 * 16 + 4 * 256 + 4)
    else:
        absmax = 4 * blocks + tensors * 4 * 16
    return data + absmax


def _weight_bytes(spec: ModelSpec, setup: TrainSetup, p: _Params, prec: _Precision) -> int:
    adapter = 0 if setup.method == "full" else p.trainable * prec.train
    if prec.quantized:
        return nf4_bytes(p.linear, p.linear_tensors, double_quant=setup.double_quant) + (
            p.total - p.linear) * prec.other + adapter
    return p.total * prec.base + adapter if setup.method != "full" else p.total * prec.base


def _optimizer_bytes(setup: TrainSetup, p: _Params, spec: ModelSpec, prec: _Precision) -> int:
    n = p.trainable
    opt = setup.optimizer
    if opt in ("adamw", "adamw_foreach", "paged_adamw_32bit"):
        # exp_avg, exp_avg_sq in the parameter dtype (torch/optim/adam.py _init_group); bitsandbytes'
        # PagedAdamW32bit keeps the same two fp32 states in paged (unified) memory.
        return 2 * n * prec.train
    if opt in ("adamw_8bit", "paged_adamw_8bit"):
        # two uint8 states + fp32 absmax per 256-element block (bitsandbytes Optimizer2State).
        return 2 * n + 2 * 4 * -(-n // BNB_OPT_BLOCK)
    if opt == "sgd":  # HF Trainer "sgd": torch.optim.SGD without momentum keeps no state
        return 0
    if opt == "adafactor":
        # transformers.optimization.Adafactor: factored second moment (row + column vectors) per
        # matrix, full state for vectors; no first moment (beta1=None). States are fp32.
        if setup.method != "full":
            return n * FP32
        rows_cols = sum(n * sum((s.in_features + s.out_features) * s.count for s in shapes)
                        for shapes, n in spec.layer_groups())
        matrices = spec.vocab_size + spec.hidden_size  # embeddings (and untied lm_head)
        if not spec.tie_word_embeddings:
            matrices *= 2
        vectors = p.total - sum(n * sum(s.params for s in shapes) for shapes, n in spec.layer_groups()) \
            - spec.vocab_size * spec.hidden_size * (1 if spec.tie_word_embeddings else 2)
        return (rows_cols + matrices + max(0, vectors)) * FP32
    raise FtplanError(f"optimizer={opt!r} is not supported",
                      hint="choose adamw, adamw_8bit, paged_adamw_8bit, sgd or adafactor")


# ---------------------------------------------------------------------------------------------------------
# Saved activations per decoder layer (what autograd keeps between forward and backward)
# ---------------------------------------------------------------------------------------------------------


def _targets(spec: ModelSpec, setup: TrainSetup) -> list:
    """LinearShapes of one layer that carry a LoRA adapter."""
    if setup.method not in ADAPTER_METHODS:
        return []
    layer0 = spec.family.layer_prefix + ".0."
    return [s for n, s in spec.lora_target_modules(setup.lora_target_modules) if n.startswith(layer0)]


def _norm_saved(d: _Dims, width: int, heads: int, prec: _Precision, full: bool, gemma: bool) -> int:
    """RMSNorm (transformers LlamaRMSNorm): ``x.to(float32)`` saved by pow/mul (fp32), rsqrt (fp32 per
    row); with a trainable weight also the 16-bit normalised tensor (weight * x.to(dtype)); Gemma's
    ``x * (1 + w.float())`` keeps the fp32 normalised tensor instead."""
    T = d.T
    saved = FP32 * T * width + FP32 * T * heads
    if full:
        saved += FP32 * T * width if (gemma or prec.base == FP32) else prec.compute * T * width
    return saved


def _layer_saved(spec: ModelSpec, setup: TrainSetup, d: _Dims, prec: _Precision) -> tuple[int, int]:
    """(activation bytes, 16-bit weight-copy bytes) saved by one decoder layer in the forward pass."""
    if spec.family.layout == "gpt2":
        return _gpt2_layer_saved(spec, setup, d, prec)
    T, c = d.T, prec.compute
    full = setup.method == "full"
    gemma = spec.model_type in ("gemma", "gemma2", "gemma3_text")
    targets = {s.name: s for s in _targets(spec, setup)}
    saved = 0
    # -- norms: input_layernorm and post_attention/pre_feedforward layernorm feed Linear layers
    saved += 2 * _norm_saved(d, d.h, 1, prec, full, gemma)
    if spec.family.norms_per_layer == 4:  # Gemma 2 post-attention / post-feedforward norms
        saved += 2 * _norm_saved(d, d.h, 1, prec, full, gemma)
    if spec.family.qk_norm:  # Qwen3 q_norm / k_norm over head_dim
        saved += _norm_saved(d, d.q, d.heads, prec, full, False) + _norm_saved(d, d.kv, d.kv_heads, prec, full, False)
    # -- Linear inputs and weight copies
    weight_copies = 0
    groups = _linear_groups(spec, d)  # (module names sharing one input, input width)
    for names, width in groups:
        if full:
            if prec.autocast:
                # autocast casts the fp32 input per Linear call (no cache for activations): one 16-bit
                # copy per module whose input is fp32 (the norm outputs); o/down inputs are already 16-bit
                fp32_input = width == d.h and names[0] not in ("o_proj", "dense")
                saved += (len(names) if fp32_input else 1) * c * T * width if fp32_input else 0
                weight_copies += sum(2 * _linear_numel(spec, n) for n in names)
            else:
                # the norm output (shared); o_proj/down_proj inputs are counted with attention/MLP
                saved += c * T * width if width == d.h and names[0] not in ("o_proj", "dense") else 0
            continue
        hit = [targets[n] for n in names if n in targets]
        if not hit:
            continue
        if prec.autocast:  # peft casts x to the fp32 adapter dtype, autocast casts it back: a copy each
            saved += len(hit) * c * T * width
            weight_copies += sum(2 * setup.lora_r * (s.in_features + s.out_features) * s.count for s in hit)
        elif names[0] not in ("o_proj", "dense"):
            # lora_A saves the module input itself: the norm output (attention/MLP input) or the MLP's
            # act*up product (down_proj); o_proj's input is the attention output, already saved
            saved += c * T * width
        saved += sum(c * T * setup.lora_r * s.count for s in hit)  # lora_A output, saved by lora_B
        if setup.lora_dropout > 0:  # native_dropout's bool mask of the (fp32-cast) input, per adapter
            saved += len(hit) * T * width
        if setup.method == "dora":  # DoRA: weight norm of W + BA and the base result again
            saved += sum(c * T * s.out_features for s in hit)
    # -- attention
    saved += _attention_saved(spec, setup, d, prec)
    if full and setup.attn_implementation == "eager":
        saved += c * T * d.q  # o_proj input: attn_output.transpose(1, 2).contiguous()
    # -- MLP (gated: gate, up, act(gate), act*up; plain: fc, act)
    e = max(1, spec.num_experts_per_tok) if spec.num_experts else 1
    # full: gate, up, act(gate) and act*up (down_proj's input); frozen MLP: the first three (down's
    # input is saved only through a LoRA adapter on down_proj, counted with the Linear inputs above)
    saved += (4 if full else 3) * c * T * d.i * e
    if spec.num_experts:
        saved += _moe_extra(spec, d, c, full)
    return saved, weight_copies


def _moe_extra(spec: ModelSpec, d: _Dims, c: int, full: bool) -> int:
    """transformers 5 MixtralExperts.forward loops over the experts hit: ``gate_up_proj[expert_idx]``
    (a tensor index) copies each hit expert's weights, which F.linear saves for backward; the expert
    output scaled by its routing weight is saved too, and (full) the gathered token rows; the router
    keeps fp32 softmax probabilities (T x E)."""
    hit = min(spec.num_experts, d.T * spec.num_experts_per_tok)
    # LinearShape.count holds the expert count; in x out is one expert's matrix
    sparse = next((i for i in range(spec.num_layers) if spec.is_sparse_layer(i)), 0)
    per_expert = sum(s.in_features * s.out_features for s in spec.linear_layers(sparse) if s.role == "expert")
    per_expert = per_expert or 3 * d.h * d.i
    tokens = d.T * spec.num_experts_per_tok
    extra = c * hit * per_expert + c * tokens * d.h + FP32 * d.T * spec.num_experts
    if full:
        extra += c * tokens * d.h
    return extra


def _linear_groups(spec: ModelSpec, d: _Dims) -> list[tuple[tuple[str, ...], int]]:
    """Modules of one layer that read the same input tensor, and that input's width."""
    names = [s.name for s in spec.linear_layers() if s.kind != "param"]
    groups: dict[str, list[str]] = {}
    width: dict[str, int] = {}
    for s in spec.linear_layers():
        if s.kind == "param":
            continue
        key = "attn_in" if s.name in ("q_proj", "k_proj", "v_proj", "qkv_proj") else \
            "mlp_in" if s.name in ("gate_proj", "up_proj", "gate_up_proj", "gate") else s.name
        groups.setdefault(key, []).append(s.name)
        width[key] = s.in_features
    del names
    return [(tuple(v), width[k]) for k, v in groups.items()]


def _linear_numel(spec: ModelSpec, name: str) -> int:
    return sum(s.in_features * s.out_features * s.count for s in spec.linear_layers() if s.name == name)


def _attention_saved(spec: ModelSpec, setup: TrainSetup, d: _Dims, prec: _Precision) -> int:
    """Attention internals: q, k, v after RoPE and the output are saved by every implementation;
    sdpa/flash add a fp32 logsumexp per row and head; eager keeps the scores: the fp32 softmax
    output (transformers eager_attention_forward: ``softmax(..., dtype=torch.float32)``) and its
    16-bit copy that multiplies V, and repeats k/v to all heads (``repeat_kv``)."""
    T, c = d.T, prec.compute
    if setup.attn_implementation == "eager":
        kv = d.q if d.kv_heads != d.heads else d.kv
        scores = d.b * d.heads * d.s * d.s
        saved = c * T * (d.q + 2 * kv) + FP32 * scores + c * scores
        if spec.config.get("attn_logit_softcapping"):  # Gemma 2: tanh output saved
            saved += c * scores
        if _dropout(spec, "attention_dropout") > 0:  # dropout mask over the probabilities
            saved += scores
        return saved
    kv = d.q if setup.padding_mask and d.kv_heads != d.heads else d.kv  # masked sdpa: repeat_kv first
    return c * T * (2 * d.q + 2 * kv) + FP32 * T * d.heads


# transformers config class defaults for dropout keys absent from a config.json
_DROPOUT_DEFAULTS = {"gpt2": {"attn_pdrop": 0.1, "resid_pdrop": 0.1, "embd_pdrop": 0.1}}


def _dropout(spec: ModelSpec, key: str) -> float:
    value = spec.config.get(key)
    if value is None:
        value = _DROPOUT_DEFAULTS.get(spec.model_type, {}).get(key, 0.0)
    return float(value or 0.0)


def _layernorm_saved(d: _Dims, prec: _Precision, full: bool) -> int:
    """nn.LayerNorm (native_layer_norm): saves its input, mean and rstd (fp32 per row on CUDA); with a
    trainable model the output is saved by the next Conv1D/Linear."""
    return prec.compute * d.T * d.h + 2 * FP32 * d.T + (prec.compute * d.T * d.h if full else 0)


def _gpt2_layer_saved(spec: ModelSpec, setup: TrainSetup, d: _Dims, prec: _Precision) -> tuple[int, int]:
    """GPT-2 block (transformers modeling_gpt2.py): ln_1/ln_2; c_attn's fused q|k|v output stays alive as
    the storage of v, q and k are separate copies, sdpa saves its output and logsumexp; gelu_new
    (activations.py NewGELUActivation) is written out and saves input, tanh, 0.5*x and 1+tanh."""
    T, c = d.T, prec.compute
    full = setup.method == "full"
    saved = 2 * _layernorm_saved(d, prec, full)
    saved += 6 * c * T * d.h + FP32 * T * d.heads
    if setup.attn_implementation == "eager":
        scores = d.b * d.heads * d.s * d.s
        saved += FP32 * scores + c * scores
    saved += (5 if full else 4) * c * T * d.i
    # dropout (GPT2Config defaults 0.1): native_dropout saves a 1-byte mask; two residual dropouts per
    # block; attention dropout inside sdpa keeps only the RNG state (flash/efficient kernels), eager
    # saves a mask over the scores.
    if _dropout(spec, "resid_pdrop") > 0:
        saved += 2 * T * d.h
    if setup.attn_implementation == "eager" and _dropout(spec, "attn_pdrop") > 0:
        saved += d.b * d.heads * d.s * d.s
    weight_copies = 0
    for s in _targets(spec, setup):
        # lora_A saves its input: under autocast the 16-bit cast of peft's fp32 copy; in fp32 the module
        # input itself: the LayerNorm outputs and the GELU output are new saved tensors, the merged
        # attention heads (attn.c_proj's input) are already among the attention's saved tensors above.
        # Measured on fake tensors, GPT-2 12 layers fp32: -11.1% without this term, -0.0% with it.
        own = prec.autocast or s.path != "attn.c_proj"
        saved += c * T * setup.lora_r * s.count + (c * T * s.in_features if own else 0)
        saved += T * s.in_features if setup.lora_dropout > 0 else 0
        if prec.autocast:
            weight_copies += 2 * setup.lora_r * (s.in_features + s.out_features)
    if full and prec.autocast:
        weight_copies += 2 * sum(s.in_features * s.out_features for s in spec.linear_layers())
    return saved, weight_copies


def _ckpt_extra(spec: ModelSpec, d: _Dims, prec: _Precision, full: bool) -> int:
    """Under gradient checkpointing, MemTracker sees a constant (independent of the layer count and the
    LoRA targets) surplus at the loss over the per-layer inputs: the rotary cos/sin pair the checkpointed
    layers keep as inputs, plus 3 (frozen base) / 1 (full) hidden-state-sized 16-bit tensors. Measured,
    not derived: calibrated on the development model only (Llama-3.2-1B, 1/2/4 layers, s 2048-4096,
    LoRA q,v / q,k,v,o / all-linear and full); the other benchmark models are held out."""
    rope = 2 * d.s * spec.head_dim * prec.compute if spec.family.layout != "gpt2" else 0
    return rope + (1 if full else 3) * prec.compute * d.T * d.h


def _layer_input_bytes(d: _Dims, prec: _Precision, setup: TrainSetup) -> int:
    """Gradient checkpointing (transformers 5: torch.utils.checkpoint, use_reentrant=False) keeps only
    each layer's input hidden states (fp32 residual stream for fp32/mixed models)."""
    residual = prec.base if setup.method == "full" else (prec.other or prec.base)
    return max(residual, prec.compute) * d.T * d.h


# ---------------------------------------------------------------------------------------------------------
# Phases of one step
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Parts:
    weights: int
    grads: int
    optim: int
    layer_act: int  # one layer's saved activations
    layer_copies: int  # one layer's autocast weight copies
    ckpt_input: int  # per layer, under gradient checkpointing
    head_act: int  # final norm + lm_head input
    logits: int  # T * V elements
    head_grad: int  # lm_head (or tied embedding) gradient bytes
    embed_grad_tmp: int  # dense embedding gradient built in backward (full fine-tuning)
    layer_grad: int  # one layer's gradient bytes
    step_tmp: int
    gather: int  # ZeRO-3/FSDP all-gathered parameters + buckets
    head_copies: int  # autocast copy of lm_head weight
    dequant: int = 0  # QLoRA: one dequantised 16-bit weight matrix (bitsandbytes MatMul4Bit.backward)
    first_layer_discount: int = 0  # frozen embeddings: layer 0's input norm saves nothing
    ckpt_extra: int = 0  # gradient checkpointing: tensors alive at the loss beyond the layer inputs
    fused: _FusedHead | None = None  # TRL fused LM head instead of full logits
    # sharded runs (planner.sharding.Sharded.points): their own points in the layers, each (name, layers of
    # saved activations, + the recomputed layer?, + the transient layer gradients?, layers of gradients or
    # -1 for none, gathered bytes), and the gathered bytes at the end of backward; empty/None: the
    # single-device points with ``gather``
    backward: tuple = ()
    gather_end: int | None = None


@dataclass(frozen=True)
class _FusedHead:
    """Bytes of TRL's chunked log-prob loss (ChunkedLogProbFunction forward/backward)."""

    saved: int  # the gathered hidden states it saves (hidden_states[mask]: a copy) + per-token stats
    tile: int  # the reused [4096, 32768] projection buffer + the 16-bit copy of one weight chunk
    grad_hidden: int  # fp32 accumulator of the hidden-state gradient + its cast to the hidden dtype
    grad_weight: int  # fp32 accumulator of the lm_head gradient (trained head only) + cast copy


@dataclass(frozen=True)
class _Phase:
    name: str
    grads: int  # gradient bytes alive
    act: int  # saved activations alive
    tmp: int  # transient tensors alive

    def allocated(self, resident: int) -> int:
        return resident + self.grads + self.act + self.tmp


def _phases(p: _Parts, d: _Dims, prec: _Precision, setup: TrainSetup) -> list[_Phase]:
    """The phases of the second step (optimizer states exist, gradients were set to None); the first
    step's optimizer step is the same as the second's."""
    L, c = d.L, prec.compute
    TV = d.T * d.V
    ckpt = setup.gradient_checkpointing
    per_layer = p.ckpt_input if ckpt else p.layer_act + p.layer_copies
    stack = L * per_layer + p.head_act + p.head_copies - (0 if ckpt else p.first_layer_discount)
    if ckpt:
        stack += p.ckpt_extra
    upcast = 0 if c == FP32 else FP32 * TV  # ForCausalLMLoss: logits.float()
    loss_phases = _fused_phases(p, stack) if p.fused else [
        # forward end: logits (compute dtype), their fp32 upcast and the saved fp32 log-softmax
        _Phase("forward", 0, stack + FP32 * TV, c * TV + upcast + p.gather),
        # loss backward: saved log-softmax + incoming gradient + outgoing gradient (fp32, T x V each)
        _Phase("loss-backward", 0, stack + FP32 * TV, 2 * FP32 * TV + p.gather),
        # lm_head backward: logits gradient (fp32 + compute dtype) and the lm_head weight gradient
        _Phase("lm-head-backward", p.head_grad, stack, c * TV + upcast + c * d.T * d.h + p.gather),
    ]
    # under checkpointing, layer k's forward is recomputed in its backward (+ its output, 16-bit)
    recompute = p.layer_act + p.layer_copies + c * d.T * d.h if ckpt else 0
    transient = _layer_backward_tmp(d, prec) + p.dequant
    out = list(loss_phases)
    # walking down the layers: layer k's activations (recomputed under checkpointing) + gradients above;
    # the final norm / lm_head saved tensors are freed before the top layer's backward starts
    points = p.backward or (("backward-top", L, True, True, 0, p.gather),
                            ("backward-bottom", 1, True, True, L - 1, p.gather))
    for name, layers, rec, tmp, grad_layers, g in points:
        act = layers * per_layer + (recompute if rec else 0)
        grads = p.head_grad + grad_layers * p.layer_grad if grad_layers >= 0 else 0
        # without the transient gradients, one hidden-state tensor passes between layers
        out.append(_Phase(name, grads, act, (transient if tmp else c * d.T * d.h) + g))
    end = p.gather if p.gather_end is None else p.gather_end
    out.append(_Phase("backward-end", p.grads, 0, p.embed_grad_tmp + end))
    out.append(_Phase("optimizer-step", p.grads, 0, p.step_tmp))
    if setup.grad_accum > 1:
        # Gradient accumulation: from the second micro-batch on, every parameter's .grad is alive through
        # the whole forward and backward (Trainer zeroes them only after optimizer.step()); each incoming
        # gradient is a temporary that AccumulateGrad adds in place (torch/csrc/autograd/functions/
        # accumulate_grad.h): the lm_head's in the loss backward, one layer's while that layer runs backward.
        def fresh(name: str) -> int:
            if name == "lm-head-backward":
                return p.head_grad
            layer = name.startswith("backward") and name != "backward-end"  # FSDP adds more layer points
            return p.layer_grad if layer else 0

        out = [replace(ph, grads=max(ph.grads, p.grads + fresh(ph.name))) for ph in out]
    return out


def _fused_phases(p: _Parts, stack: int) -> list[_Phase]:
    """The loss through TRL's fused LM head: no logits; the projection tile, then in backward the fp32
    gradient accumulators (trl/kernels/chunked_logprob.py ChunkedLogProbFunction)."""
    f = p.fused
    return [
        _Phase("forward", 0, stack + f.saved, f.tile + p.gather),
        _Phase("lm-head-backward", 0, stack + f.saved, f.tile + f.grad_hidden + f.grad_weight + p.gather),
    ]


def _fused_head(spec: ModelSpec, setup: TrainSetup, d: _Dims, prec: _Precision, head_grad: int,
                head_bytes: int) -> _FusedHead:
    c = prec.compute
    n = d.b * max(1, d.s - 1)  # next-token positions: hidden_states[:, :-1]
    hidden_bytes = max(c, prec.other or prec.base) if setup.method != "full" else prec.base
    # saved: the gathered hidden states (a copy: boolean-mask indexing / reshape of a strided slice) and
    # log_z + entropy (fp32 per token); the tile is [min(N, 4096), min(V, 32768)] in the compute dtype.
    saved = hidden_bytes * n * d.h + 2 * FP32 * n
    chunk_v = min(d.V, FUSED_VOCAB_CHUNK)
    weight_copy = 2 * chunk_v * d.h if prec.autocast and (prec.base == FP32 or prec.other == FP32) else 0
    tile = c * min(n, FUSED_TOKEN_CHUNK) * chunk_v + weight_copy + c * min(n, FUSED_TOKEN_CHUNK) * d.h
    if setup.device == "cpu":
        tile += int(FUSED_TORCH_TILE_FP32_COPIES * FP32 * min(n, FUSED_TOKEN_CHUNK) * chunk_v)
    grad_hidden = FP32 * n * d.h + hidden_bytes * n * d.h
    # trained lm_head (full fine-tuning): fp32 accumulator; cast to the weight dtype (no copy for fp32),
    # then AccumulateGrad makes it .grad (head_grad)
    grad_weight = 0
    if head_grad:
        grad_weight = FP32 * d.V * d.h + (head_grad if head_bytes != FP32 else 0)
    return _FusedHead(saved, tile, grad_hidden, grad_weight)


def _layer_backward_tmp(d: _Dims, prec: _Precision) -> int:
    """Gradients alive while one layer runs backward: in the MLP the gradients of the gate, up and
    activation outputs (3 x T x i), and the residual-stream gradient pair (2 x T x h). The form is read
    off the autograd graph; the hidden-size term was checked on the development model only
    (Llama-3.2-1B with an 8k vocabulary so that the layer phases set the peak)."""
    c = prec.compute
    return 3 * c * d.T * d.i + 2 * c * d.T * d.h


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------


def estimate_memory(spec: ModelSpec, setup: TrainSetup, *, free_bytes: int | None = None) -> MemoryBreakdown:
    """Per-GPU memory of ``setup`` on ``spec``: resident state + the largest phase of a training step.

    ``free_bytes`` is accepted for callers that want notes about the fit; the verdict itself lives in
    planner.estimate.
    """
    validate_setup(spec, setup)
    spec = resized(spec, setup.added_tokens)
    notes: list[str] = []
    if spec.linear_attn is not None:
        notes.append(f"hybrid model: the activations of its {spec.num_layers - spec.num_attention_layers} "
                     "linear-attention layers are estimated like attention layers (not traced)")
    if spec.model_type == "gemma2" and setup.attn_implementation == "sdpa":
        # transformers: Gemma2PreTrainedModel._supports_sdpa = False (sdpa cannot softcap the scores)
        setup = setup.with_(attn_implementation="eager")
        notes.append("Gemma 2 cannot use sdpa in transformers (logit softcapping): estimated with eager "
                     "attention (s^2 scores); flash_attention_2 avoids them")
    prec = _precision(setup)
    d = _dims(spec, setup)
    p = _params(spec, setup)
    full = setup.method == "full"

    weights = _weight_bytes(spec, setup, p, prec)
    if prec.quantized:
        fused = unquantized_expert_params(spec)
        if fused:
            kept = "fp32 (upcast): turn the upcast off (qlora_upcast: false) to keep them in bf16" \
                if prec.other == FP32 else "bf16"
            notes.append(f"QLoRA: transformers stores the {fused / 1e9:.1f}B expert weights as fused tensors that "
                         f"bitsandbytes does not quantize; they stay {kept}")
    grads = p.trainable * prec.train
    optim = _optimizer_bytes(setup, p, spec, prec)
    save = _saved_module_params(spec, setup)
    if save:
        # ModulesToSaveWrapper copies keep the original's dtype (peft does not upcast them: they are not
        # BaseTunerLayers, tuners_utils.py _cast_adapter_dtype); under QLoRA that is the fp32 upcast dtype.
        # They train like full fine-tuning: weights + gradients + optimizer states in that dtype.
        b = prec.other or prec.base
        weights += save * b
        grads += save * b
        optim += _optimizer_bytes(setup, replace(p, trainable=save), spec, replace(prec, train=b))
        p = replace(p, trainable=p.trainable + save, largest=max(p.largest, save // len(setup.modules_to_save)))
        notes.append(f"modules_to_save {', '.join(setup.modules_to_save)}: trainable copies of "
                     f"{save / 1e6:.0f}M parameters with their gradients and optimizer states")
    # Optimizer step temporaries: fused AdamW (Trainer default "adamw_torch_fused"), SGD and the
    # bitsandbytes 8-bit kernels update in place. transformers' Adafactor.step works per parameter in
    # fp32: grad.float(), p.float() for 16-bit params, grad**2 + eps, the row/col outer product and the
    # update: ~4 fp32 copies of the largest parameter (transformers/optimization.py Adafactor.step).
    step_tmp = 4 * p.largest * FP32 if setup.optimizer == "adafactor" else 0
    if setup.optimizer == "adamw_foreach":
        # torch's multi-tensor AdamW (foreach=True, the torch default on CUDA when fused is not asked for):
        # ``exp_avg_sq_sqrt = torch._foreach_sqrt(exp_avg_sqs)`` allocates one state-sized tensor per
        # parameter of the group before addcdiv (torch/optim/adam.py _multi_tensor_adam).
        step_tmp = grads
    from planner.sharding import shard_state  # planner.sharding reads this module's precision tables

    sh = shard_state(spec, setup, p, prec, weights=weights, grads=grads, optim=optim, step_tmp=step_tmp)
    weights, grads, optim, step_tmp, gather, cpu, prec = (sh.weights, sh.grads, sh.optim, sh.step_tmp, sh.gather,
                                                          sh.cpu, sh.prec)
    stage, n = sh.stage, sh.n

    if setup.reference_model and full:
        # frozen reference copy in the policy's dtype (trl dpo_trainer.py: ref_model_init_kwargs
        # dtype=self.model.dtype); no grads, no optimizer states, its forward runs under no_grad so it
        # saves no activations; ZeRO-3/FSDP shard it like the policy.
        ref = p.total * prec.base
        ref = ref // n if stage >= 3 else ref
        weights += 0 if setup.offload_params else ref
        notes.append(f"DPO reference model: a frozen copy of the weights ({ref / 2**30:.2f} GiB) is counted "
                     "in weights")

    act, copies = _layer_saved(spec, setup, d, prec)
    if spec.norm_type == "layernorm":
        head_act = _layernorm_saved(d, prec, full)
    else:
        head_act = _norm_saved(d, d.h, 1, prec, full, spec.model_type in ("gemma", "gemma2")) + (
            prec.compute * d.T * d.h if full else 0)
    saved_head = any(SAVE_MODULES[m] == "head" for m in setup.modules_to_save)
    if saved_head and spec.norm_type != "layernorm":
        head_act += prec.compute * d.T * d.h  # a trainable lm_head saves its input for its weight gradient
    if spec.family.layout == "gpt2" and _dropout(spec, "embd_pdrop") > 0:
        head_act += d.T * d.h  # embedding dropout mask
    if spec.config.get("final_logit_softcapping"):
        head_act += prec.compute * d.T * d.V  # tanh output
    if setup.padding_mask:
        head_act += d.b * d.s * d.s  # the 4D boolean attention mask, shared by every layer's sdpa
    vh = spec.vocab_size * spec.hidden_size
    head_bytes = prec.train if full else (prec.other or prec.base)
    head_grad = vh * head_bytes if full or saved_head else 0
    if stage >= 2:
        head_grad //= n
    layer_grad = (grads - head_grad) // d.L if full else 0
    # Tied embeddings: autograd sums the lm_head and the embedding gradient of the shared weight before
    # AccumulateGrad, so the end of backward holds both contributions and their sum (3 x V x h; one of
    # them becomes .grad, counted in ``grads``). Untied: each gradient is stolen into .grad as is.
    embed_tmp = 2 * vh * prec.train if full and spec.tie_word_embeddings else 0
    # autocast's 16-bit copy of an fp32 lm_head weight (mixed precision; QLoRA, whose lm_head
    # prepare_model_for_kbit_training upcast to fp32), saved by the lm_head matmul for backward
    head_copies = 2 * vh if prec.autocast and (full and prec.base == FP32 or prec.other == FP32) else 0
    parts = _Parts(
        weights=weights, grads=grads, optim=optim, layer_act=act, layer_copies=copies,
        ckpt_input=_layer_input_bytes(d, prec, setup), head_act=head_act, logits=d.T * d.V,
        head_grad=head_grad, embed_grad_tmp=embed_tmp, layer_grad=layer_grad, step_tmp=step_tmp,
        gather=gather, head_copies=head_copies, backward=sh.backward, gather_end=sh.gather_end,
        ckpt_extra=_ckpt_extra(spec, d, prec, full) if setup.gradient_checkpointing else 0,
        first_layer_discount=0 if (full or setup.method == "prompt" or spec.norm_type != "rmsnorm")
        else _norm_saved(d, d.h, 1, prec, False, False),
        dequant=2 * max([s.in_features * s.out_features for s in spec.linear_layers() if s.kind != "param"],
                        default=0) if prec.quantized else 0,
        fused=_fused_head(spec, setup, d, prec, head_grad, head_bytes) if setup.fused_loss else None,
    )
    phases = _phases(parts, d, prec, setup)
    resident = weights + optim
    top = max(phases, key=lambda ph: ph.allocated(resident))
    peak = top.allocated(resident)
    if setup.optimizer == "paged_adamw_8bit":
        notes.append("paged 8-bit AdamW states live in CUDA unified memory; counted on the GPU (they are "
                     "evicted to CPU only under memory pressure)")
    if setup.precision == "fp16" and full and not setup.mixed_precision:
        notes.append("pure fp16 training without loss scaling is numerically unstable; prefer bf16")
    overhead, overhead_parts = device_overhead(peak, setup)
    return MemoryBreakdown(
        weights=weights,
        gradients=grads,
        optimizer=optim,
        activations=top.act,
        temporary=top.tmp,
        peak_allocated=peak,
        overhead=overhead,
        total=peak + overhead,
        cpu_bytes=cpu,
        notes=tuple(notes),
        phase=top.name,
        phases=tuple((ph.name, ph.allocated(resident)) for ph in phases),
        overhead_parts=overhead_parts,
    )


def activation_bytes(spec: ModelSpec, setup: TrainSetup) -> int:
    """Saved activations of the whole forward pass (all layers + head), for monotonicity checks."""
    prec = _precision(setup)
    d = _dims(spec, setup)
    if setup.gradient_checkpointing:
        per_layer = _layer_input_bytes(d, prec, setup)
    else:
        per_layer = sum(_layer_saved(spec, setup, d, prec))
    return d.L * per_layer + FP32 * d.T * d.V
