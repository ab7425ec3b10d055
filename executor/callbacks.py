"""TrainerCallbacks: metrics.jsonl, checkpoint commit, SIGINT/SIGTERM stop, NaN guard. Each does one thing."""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from pathlib import Path

from transformers import TrainerCallback

from executor import checkpoints


def memory_now() -> dict[str, float]:
    """Peak memory so far: CUDA allocated/reserved on GPU, process peak RSS on CPU (GiB)."""
    import resource

    import torch

    out = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # KiB on Linux
    if torch.cuda.is_available():
        out["cuda_max_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
        out["cuda_max_reserved_gb"] = torch.cuda.max_memory_reserved() / 2**30
    return out


class MetricsCallback(TrainerCallback):
    """Enriches every log (perplexity, tokens/s, memory) and appends it to metrics.jsonl.

    Inserted first in the callback list so TensorBoard and the progress bar see the added keys.
    """

    def __init__(self, path: Path):
        self.path = path
        self._t0 = self._last_t = None
        self._last_tokens = 0
        self.start_tokens = 0  # tokens already seen when this process started (resume)
        self.training = False
        # evaluation inside trainer.train() (Trainer logs eval_runtime after every evaluate()): the
        # planner's time model covers the training steps only, so the run summary takes it out
        self.eval_seconds = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = self._last_t = time.perf_counter()
        self._last_tokens = self.start_tokens = state.num_input_tokens_seen
        self.training = True

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        now = time.perf_counter()
        if "eval_loss" in logs:
            logs["eval_perplexity"] = _perplexity(logs["eval_loss"])
        if self.training and isinstance(logs.get("eval_runtime"), (int, float)):
            self.eval_seconds += float(logs["eval_runtime"])
            self._last_t = now  # tokens/s of the next log: training time only
        if "loss" in logs and self._last_t is not None:
            seen = state.num_input_tokens_seen
            dt = now - self._last_t
            if dt > 0 and seen > self._last_tokens:
                logs["tokens_per_second"] = (seen - self._last_tokens) / dt
            self._last_t, self._last_tokens = now, seen
            logs.update({k: round(v, 4) for k, v in memory_now().items()})
        if state.is_world_process_zero:
            record = {
                "step": state.global_step,
                "epoch": state.epoch,
                "time": time.time(),
                "tokens_seen": state.num_input_tokens_seen,
                **logs,
            }
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, default=_json_default) + "\n")


def _perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")  # exp(50) ~ 5e21: meaningless beyond


def _json_default(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


class CommitCheckpointCallback(TrainerCallback):
    """After the Trainer has written checkpoint-N: commit it (marker), then rotate old ones."""

    def __init__(self, keep: int):
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank has written its shards before rank 0 commits
        if state.is_world_process_zero:
            folder = Path(args.output_dir)
            ckpt = folder / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                checkpoints.mark_complete(ckpt)
                checkpoints.rotate(folder, self.keep, protect=state.best_model_checkpoint)


# Exit status after a signal-requested stop: 128 + the signal number, as shells and schedulers report a
# process killed by it (Slurm, Kubernetes and spot pre-emption send SIGTERM; Ctrl-C is SIGINT).
STOP_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class InterruptCallback(TrainerCallback):
    """SIGINT (Ctrl-C) or SIGTERM ask for a committed checkpoint at the end of the current optimizer step,
    then a clean stop; the run then exits 130 or 143.

    In a distributed run every rank must stop at the same step (the save is collective), so at each step
    end the ranks agree on the request with one all-reduce (MAX) of a flag. A second Ctrl-C falls through
    to Python's default (KeyboardInterrupt) for users who mean it.
    """

    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self.stopped_at: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def exit_code(self) -> int:
        return STOP_SIGNALS.get(self.signum, 130)

    @property
    def signal_name(self) -> str:
        return "SIGTERM" if self.signum == signal.SIGTERM else "Ctrl-C"

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested, self.signum = True, self.signum or signum
        name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        print(f"\nftplan: {name} received: saving a checkpoint after this step, then stopping", flush=True)

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)

    def _agreed(self, args) -> bool:
        """Whether any rank was asked to stop (every rank calls this at the same step end)."""
        try:
            import torch
            import torch.distributed as dist
        except ImportError:  # pragma: no cover - the executor always has torch
            return self.requested
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.requested
        device = args.device if dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([int(self.requested), int(self.signum or 0)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag[0].item() and not self.requested:
            self.requested, self.signum = True, int(flag[1].item()) or signal.SIGTERM
        return bool(flag[0].item())

    def on_step_end(self, args, state, control, **kwargs):
        if self._agreed(args):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


class NanGuardCallback(TrainerCallback):
    """Stops on a NaN/inf training loss (or grad norm) before the bad weights can be checkpointed.

    ``logging_nan_inf_filter=False`` must be set, or the Trainer hides non-finite losses from the logs.
    Logging steps divide save steps (see trainer.logging_steps), so a bad loss is seen at, or before,
    the step that would save; ``should_save`` is cleared here, before the Trainer reaches the save.
    fp16 runs skip the grad-norm check: inf gradients there are the loss scaler's normal overflow.
    """

    def __init__(self, check_grad_norm: bool = True):
        self.check_grad_norm = check_grad_norm
        self.bad: tuple[int, str, float] | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or self.bad:
            return
        keys = ["loss"] + (["grad_norm"] if self.check_grad_norm else [])
        for key in keys:
            value = logs.get(key)
            if value is not None and not math.isfinite(float(value)):
                self.bad = (state.global_step, key, float(value))
                control.should_training_stop = True
                control.should_save = False
                control.should_evaluate = False
                return


class SaveAtEndCallback(TrainerCallback):
    """Checkpoint the last step too, so a finished run restarted resumes at the end (no retraining)."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_save = True
