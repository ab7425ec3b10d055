"""ftplan planner: turns a model, a dataset, a task and hardware into a reviewed fine-tuning plan.

Everything in this package is pure Python (no torch, transformers or peft) so that planning is
instant and works on a laptop with no GPU. The training side lives in ``executor/``.
"""

__version__ = "0.1.0"
