"""The library versions a plan records (so a run can say what it was planned against)."""


from __future__ import annotations

from planner import __version__

VERSIONED = ("torch", "transformers", "peft", "accelerate", "trl", "deepspeed", "bitsandbytes")


def collect_versions() -> dict[str, str]:
    """ftplan's version plus the training libraries' installed versions (importlib.metadata reads the
    dist-info only: nothing is imported)."""
    from importlib import metadata

    out = {"ftplan": __version__}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
