"""Per-rank memory of FSDP2 runs: ``planner.memory.estimate_memory`` against a traced training step.

Ground truth: two real training steps (forward with labels, backward, AdamW step, zero_grad) of
transformers models built from the catalog's architecture configs (real widths and vocabularies, fewer
decoder layers), wrapped with FSDP2 ``fully_shard`` the way accelerate's ``fsdp2_prepare_model`` does it
for ftplan's accelerate_config.yaml (fsdp_version 2, TRANSFORMER_BASED_WRAP, reshard_after_forward true):
one unit per decoder layer, an untied input embedding as its own unit, the tail [final norm, lm_head
(+ tied embedding)] with reshard_after_forward=False, then the root. Rank 0 of an N-rank fake process
group (``torch.testing._internal.distributed.fake_pg.FakeStore``) on fake tensors (``FakeTensorMode``),
measured by ``torch.distributed._tools.fsdp2_mem_tracker.FSDPMemTracker`` (every live storage: sharded
and unsharded parameters, gradients, all-gather and reduce-scatter buffers, activations, optimizer states).

Precision policies, as accelerate sets them (accelerate/utils/dataclasses.py FullyShardedDataParallelPlugin
set_mixed_precision: MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=bf16, output_dtype=bf16);
fsdp2_prepare_model upcasts every trainable parameter to fp32 since the Trainer's bf16=True makes
accelerate's mixed_precision bf16):
  mixed  full fine-tuning, model loaded in fp32 (plans with mixed_precision true);
  bf16   full fine-tuning, model loaded in bf16 (plans with mixed_precision false): accelerate's upcast
         makes the sharded state fp32 all the same, so a "pure bf16" FSDP2 run never happens in ftplan;
  lora   peft LoRA r16 all-linear: bf16 frozen base, fp32 adapters, the bf16 policy.
The optimizer step runs torch's fused AdamW on each parameter's local shard (what the DTensor dispatch
of ``_fused_adamw_`` does on CUDA). Stepping the DTensors themselves under FakeTensorMode makes the
tracker count global-shaped fake tensors of DTensor's sharding propagation (not allocations of a real run).

Run:  .venv/bin/python benchmarks/sharding_accuracy.py [--only TEXT] [--verbose]
          [--markdown FILE] [--json benchmarks/results/sharding_accuracy.json]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from dataclasses import dataclass

from planner.memory import TrainSetup, estimate_memory
from planner.model_spec import catalog_spec, spec_from_config

# Fixed before any error was looked at: the development model (the estimator's FSDP terms were written
# and checked against its traces); the other two models are held out.
DEV_MODELS = {"meta-llama/Llama-3.2-1B"}


@dataclass(frozen=True)
class Case:
    model: str
    layers: int
    policy: str  # mixed | bf16 | lora
    n: int  # ranks
    seq: int
    batch: int
    ckpt: bool = False
    vocab: int = 0  # > 0: a smaller vocabulary, so that the decoder layers' backward sets the peak

    @property
    def method(self) -> str:
        return "lora" if self.policy == "lora" else "full"

    @property
    def label(self) -> str:
        return (f"{self.model.split('/')[-1]} L{self.layers} {self.policy} N{self.n} s{self.seq} b{self.batch}"
                f"{' ckpt' if self.ckpt else ''}{f' V{self.vocab}' if self.vocab else ''}")


def cases() -> list[Case]:
    L1, Q, M = "meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-0.5B", "mistralai/Mistral-7B-v0.1"
    return [
        # development: Llama 3.2 1B (tied 128k vocabulary)
        Case(L1, 4, "mixed", 2, 512, 1),
        Case(L1, 4, "mixed", 8, 2048, 2),
        Case(L1, 4, "mixed", 4, 1024, 4, ckpt=True),
        Case(L1, 4, "bf16", 4, 1024, 1),
        Case(L1, 4, "bf16", 8, 4096, 1, ckpt=True),
        Case(L1, 4, "lora", 2, 1024, 1),
        Case(L1, 4, "lora", 4, 2048, 4),
        Case(L1, 4, "lora", 8, 512, 2, ckpt=True),
        Case(L1, 4, "mixed", 4, 1024, 1, vocab=8000),
        Case(L1, 4, "lora", 2, 2048, 2, vocab=8000),
        Case(L1, 4, "mixed", 8, 2048, 2, ckpt=True, vocab=8000),
        Case(L1, 4, "bf16", 2, 512, 1, vocab=8000),
        Case(L1, 4, "lora", 4, 1024, 1, ckpt=True, vocab=8000),
        # held out: Qwen2.5 0.5B (qkv bias, tied 152k vocabulary) and Mistral 7B (untied 32k, GQA)
        Case(Q, 6, "mixed", 4, 1024, 2),
        Case(Q, 6, "mixed", 2, 4096, 1, ckpt=True),
        Case(Q, 6, "bf16", 8, 2048, 4),
        Case(Q, 6, "lora", 4, 512, 1),
        Case(Q, 6, "lora", 2, 2048, 2, ckpt=True),
        Case(Q, 6, "lora", 8, 4096, 4),
        Case(M, 2, "mixed", 8, 1024, 1),
        Case(M, 2, "mixed", 4, 4096, 2, ckpt=True),
        Case(M, 2, "bf16", 2, 2048, 1),
        Case(M, 2, "lora", 8, 2048, 2),
        Case(M, 2, "lora", 4, 1024, 4),
        Case(M, 2, "lora", 2, 4096, 1, ckpt=True),
        Case(Q, 6, "mixed", 8, 1024, 1, vocab=8000),
        Case(M, 2, "bf16", 4, 1024, 2, vocab=8000),
    ]


# --------------------------------------------------------------------------------------- measurement

_VERBOSE = False
_PG: dict = {}


def _mesh(n: int):
    """An N-rank fake process group (rank 0) and its 1-D mesh; must exist before FakeTensorMode."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if _PG.get("n") != n:
        if dist.is_initialized():
            dist.destroy_process_group()
        dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=n)
        _PG.update(n=n, mesh=init_device_mesh("cpu", (n,)))
    return _PG["mesh"]


def config_dict(model: str, layers: int, vocab: int = 0) -> dict:
    cfg = dict(catalog_spec(model).config)
    if vocab:
        cfg["vocab_size"] = vocab
    cfg["num_hidden_layers"] = layers
    if isinstance(cfg.get("layer_types"), list):
        cfg["layer_types"] = cfg["layer_types"][:layers]
    return cfg


def shard_like_accelerate(model, mesh, mp_policy) -> None:
    """accelerate/utils/fsdp_utils.py fsdp2_prepare_model: TRANSFORMER_BASED_WRAP units (the model's
    _no_split_modules), the untied input embedding, the tail [norm, lm_head (+ tied embedding)] with
    reshard_after_forward=False, then the root (reshard_after_forward=None: False for the root)."""
    from accelerate.utils.fsdp_utils import _find_final_norm
    from torch.distributed.fsdp import FSDPModule, fully_shard

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    kw = {"mesh": mesh, "mp_policy": mp_policy, "reshard_after_forward": True}
    for module in list(model.modules()):
        if type(module).__name__ in names:
            fully_shard(module, **kw)
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and embed.weight is head.weight
    if not tied:
        fully_shard(embed, **kw)
    norm = _find_final_norm(model)
    tail = [m for m in ((norm, embed, head) if tied else (norm, head)) if m is not None
            and not isinstance(m, FSDPModule)]
    fully_shard(tail, **{**kw, "reshard_after_forward": False})
    fully_shard(model, mesh=mesh, mp_policy=mp_policy)


def measure(case: Case, raw: dict | None = None, *, layers_attr: str = "num_hidden_layers") -> int:
    """Peak bytes FSDPMemTracker sees on rank 0 over two training steps."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed.fsdp import MixedPrecisionPolicy
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = raw or config_dict(case.model, case.layers, case.vocab)
    kwargs = {k: v for k, v in raw.items() if k not in ("model_type", "architectures", "torch_dtype", "dtype")}
    config = AutoConfig.for_model(raw["model_type"], **kwargs)
    mesh = _mesh(case.n)
    bf16 = torch.bfloat16
    policy = MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=bf16, output_dtype=bf16)
    dtype = torch.float32 if case.policy == "mixed" else bf16
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    if case.ckpt:
        model.gradient_checkpointing_enable()  # transformers 5 default: use_reentrant=False
    if case.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0))
    model.train()
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = model.to_empty(device="cpu")
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.tie_weights()  # to_empty unties lm_head from the embeddings
        for param in model.parameters():  # fsdp2_prepare_model: trainable parameters to fp32
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.to(torch.float32)
        shard_like_accelerate(model, mesh, policy)
        ids = torch.randint(0, config.vocab_size, (case.batch, case.seq))
        return traced_peak(model, ids, autocast=True)  # accelerate's autocast around forward (native_amp)


def traced_peak(model, ids, *, autocast: bool) -> int:
    import torch
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

    params = [p for p in model.parameters() if p.requires_grad]
    local = [p._local_tensor.detach() for p in params]  # share the sharded storage
    opt = torch.optim.AdamW(local, lr=1e-4, fused=True)
    tracker = FSDPMemTracker(model, opt)
    with tracker:
        for _ in range(2):
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
            with ctx:
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            del loss
            for p, lp in zip(params, local):
                lp.grad = p.grad._local_tensor
            opt.step()
            for lp in local:
                lp.grad = None
            model.zero_grad(set_to_none=True)
            tracker.reset_mod_stats()
    snap = tracker.get_tracker_snapshot("peak")
    if _VERBOSE:
        print({str(k).split(".")[-1]: round(v / 2**20, 1) for dev in snap.values() for k, v in dev.items() if v})
    return max(v["Total"] for v in snap.values())


def setup_for(case: Case) -> TrainSetup:
    return TrainSetup(
        method=case.method, precision="bf16", mixed_precision=case.policy == "mixed", seq_len=case.seq,
        micro_batch=case.batch, gradient_checkpointing=case.ckpt, lora_r=16, lora_alpha=32,
            lora_target_modules=("all-linear",),
        gpus=case.n, distribution="fsdp",
    )


def estimated(case: Case, raw: dict | None = None) -> tuple[int, str]:
    raw = raw or config_dict(case.model, case.layers, case.vocab)
    spec = spec_from_config(raw, case.model, source="catalog")
    mem = estimate_memory(spec, setup_for(case))
    return mem.peak_allocated, mem.phase


# --------------------------------------------------------------------------------------- report


def run(selected: list[Case]) -> list[dict]:
    rows = []
    for case in selected:
        t0 = time.perf_counter()
        truth = measure(case)
        est, phase = estimated(case)
        rows.append({"case": case.label, "held_out": case.model not in DEV_MODELS, "measured": truth,
                     "estimated": est, "phase": phase, "err": (est - truth) / truth,
                     "seconds": time.perf_counter() - t0})
        r = rows[-1]
        print(f"{r['case']:<48} meas {truth / 2**20:9.1f} MiB  est {est / 2**20:9.1f} MiB  "
              f"err {100 * r['err']:+6.2f}%  [{phase}] {r['seconds']:.1f}s", flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    def stats(sel):
        errs = [abs(r["err"]) for r in sel]
        return (statistics.median(errs), max(errs)) if errs else (float("nan"), float("nan"))

    dev = [r for r in rows if not r["held_out"]]
    held = [r for r in rows if r["held_out"]]
    return {"all": stats(rows), "dev": stats(dev), "held_out": stats(held), "n": len(rows), "n_dev": len(dev),
            "n_held": len(held)}


def markdown(rows: list[dict], s: dict, command: str) -> str:
    lines = [
        "### Sharded runs (FSDP fake process group)",
        "",
        f"Command: `{command}` (CPU only; runtime {sum(r['seconds'] for r in rows):.0f} s).",
        "",
        ("Ground truth: rank 0 of an N-rank fake process group (`FakeStore`), transformers models from the "
         "catalog's configs (real widths and vocabularies, `L` decoder layers) on fake tensors, wrapped with "
         "FSDP2 `fully_shard` as accelerate's `fsdp2_prepare_model` does for ftplan's accelerate_config.yaml "
         "(one unit per decoder layer, tail [norm, lm_head] kept unsharded after forward, root), two "
         "training steps traced by `torch.distributed._tools.fsdp2_mem_tracker.FSDPMemTracker`. Policies: "
         "`mixed` = full fine-tuning of a model loaded in fp32, `bf16` = loaded in bf16 (a plan with "
         "mixed_precision false), both upcast to fp32 by accelerate (trainable parameters) and all-gathered "
         "under MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=bf16): a pure-bf16 FSDP2 run never "
         "happens under accelerate with bf16 on; `lora` = peft LoRA r16 all-linear (bf16 base, fp32 "
         "adapters) under the same policy. Forward under bf16 autocast (accelerate). AdamW fused on the "
         "local shards. Not seen: the CUDA caching allocator, NCCL buffers and the CUDA context."),
        "",
        (f"Development model (the FSDP terms were checked against its traces): {', '.join(sorted(DEV_MODELS))}; "
         "Qwen2.5-0.5B and Mistral-7B are held out (split by model, fixed before any error was looked at). "
         "`V8000` cases use an 8000-token vocabulary so that the decoder layers' backward, not the loss, sets "
         "the peak; the development ones were added after the first errors were seen, and the two held-out "
         "`V8000` cases were printed once by an intermediate run (before the backward points were "
         "finished); nothing was changed to match a held-out number."),
        "",
        "| | cases | median abs. error | max abs. error |",
        "|---|---:|---:|---:|",
        f"| all cases | {s['n']} | {100 * s['all'][0]:.2f}% | {100 * s['all'][1]:.2f}% |",
        f"| development | {s['n_dev']} | {100 * s['dev'][0]:.2f}% | {100 * s['dev'][1]:.2f}% |",
        f"| held out | {s['n_held']} | {100 * s['held_out'][0]:.2f}% | {100 * s['held_out'][1]:.2f}% |",
        "",
        "| case | held out | measured MiB | ftplan MiB | error | peak phase |",
        "|---|:-:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['case']} | {'yes' if r['held_out'] else 'dev'} | {r['measured'] / 2**20:,.1f} | "
                     f"{r['estimated'] / 2**20:,.1f} | {100 * r['err']:+.2f}% | {r['phase']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="substring of case labels to run")
    ap.add_argument("--dev", action="store_true", help="development cases only")
    ap.add_argument("--markdown", metavar="FILE", help="write the markdown subsection to FILE")
    ap.add_argument("--json", metavar="FILE", help="write every case's numbers to FILE")
    ap.add_argument("--verbose", action="store_true", help="print the tracker's peak breakdown per case")
    args = ap.parse_args(argv)
    global _VERBOSE
    _VERBOSE = args.verbose
    selected = cases()
    if args.dev:
        selected = [c for c in selected if c.model in DEV_MODELS]
    if args.only:
        selected = [c for c in selected if args.only in c.label]
    rows = run(selected)
    s = summary(rows)
    print(f"\nmedian {100 * s['all'][0]:.2f}%  max {100 * s['all'][1]:.2f}%  (dev median {100 * s['dev'][0]:.2f}% "
          f"max {100 * s['dev'][1]:.2f}%; held-out median {100 * s['held_out'][0]:.2f}% "
          f"max {100 * s['held_out'][1]:.2f}%)")
    command = "python benchmarks/sharding_accuracy.py --markdown FILE --json benchmarks/results/sharding_accuracy.json"
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(markdown(rows, s, command))
    if args.json:
        import json

        with open(args.json, "w") as fh:
            json.dump({"summary": s, "cases": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
