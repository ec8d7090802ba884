"""opttree_core: tree-based speculative decoding (OPT-Tree and friends), with every tree logged.

    Session.load(target, draft, policy).run(prompt) → Run (tokens, MAL, tokens/s, the TreeLog)

    inside: load_model → Drafter → TreePolicy.build (grow) → verify (score, choose, commit) → TreeLog

Names are imported on first use, so the torch-free modules (``records``, ``metrics``) load
without torch: ``import opttree_core.records`` is what treeviz and figures read logs with.
docs/architecture.md maps the modules.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "api": ("RunInfo", "encode_prompt"),
    "decoding": ("DecodeConfig", "DecodeResult", "generate", "generate_autoregressive"),
    "drafters": ("Drafter", "DraftLMDrafter", "EagleDrafter", "NGramConfig", "NGramDrafter", "self_drafter"),
    "drafters.registry": ("load_drafter",),
    "errors": ("OptTreeError",),
    "grow": ("GrowthRule", "TreeBuilder", "grow"),
    "models": ("LoadedModel", "check_same_tokenizer", "load_model"),
    "policies": ("ChainConfig", "ChainPolicy", "OptTreeConfig", "OptTreePolicy", "TreePolicy", "make_policy",
                 "policy_for_budget"),
    "profiling": ("calibrate",),
    "records": ("LogData", "StepRecord", "read_log"),
    "session": ("Run", "Session"),
    "tree": ("DraftTree", "TreeLayer"),
    "treelog": ("TreeLog", "TreeLogData"),
    "verify": ("VerifyResult", "verify"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'opttree_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
