"""Drafters: where each tree node's draft distribution q comes from (``base.py``: the protocol).

    DraftLMDrafter  draft_lm.py  an independent causal LM (or the target itself: ``self_drafter``)
    EagleDrafter    eagle.py     an EAGLE-style feature head over the target's embeddings and LM head
    NGramDrafter    ngram.py     training-free prompt lookup with real distributions
"""
from .base import Drafter
from .draft_lm import DraftLMDrafter, self_drafter
from .eagle import EagleDrafter
from .ngram import NGramConfig, NGramDrafter

__all__ = ["DraftLMDrafter", "Drafter", "EagleDrafter", "NGramConfig", "NGramDrafter", "self_drafter"]
