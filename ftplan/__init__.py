"""The front ends of ftplan: the ``ftplan`` command (``ftplan.cli``, ``ftplan.commands``) and the Textual
wizard (``ftplan.wizard``). Layers: ftplan imports executor and planner; executor imports planner; the pure
planner core (no torch, transformers, peft or UI libraries) imports neither (tests/test_layers.py)."""
