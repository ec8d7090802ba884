"""opttree_core: tree-based speculative decoding (OPT-Tree and friends), with every tree logged.

    load_model → Drafter → TreePolicy.build → verify → TreeLog
"""
from .api import RunInfo, decode_prompt, encode_prompt, load_drafter
from .decoding import DecodeConfig, DecodeResult, generate, generate_autoregressive
from .drafters import Drafter, DraftLMDrafter, self_drafter
from .eagle import EagleDrafter
from .errors import OptTreeError
from .models import LoadedModel, check_same_tokenizer, load_model
from .ngram import NGramConfig, NGramDrafter
from .policies import ChainConfig, ChainPolicy, OptTreeConfig, OptTreePolicy, TreePolicy
from .registry import make_policy, policy_for_budget
from .tree import DraftTree, TreeBuilder
from .treelog import TreeLog, TreeLogData
from .verify import VerifyResult, verify

__all__ = [
    "ChainConfig", "ChainPolicy", "DecodeConfig", "DecodeResult", "DraftLMDrafter", "DraftTree", "Drafter",
    "EagleDrafter", "LoadedModel", "NGramConfig", "NGramDrafter", "OptTreeConfig", "OptTreeError", "OptTreePolicy", "RunInfo", "TreeBuilder", "TreeLog",
    "TreeLogData", "TreePolicy", "VerifyResult", "check_same_tokenizer", "decode_prompt", "encode_prompt",
    "generate", "generate_autoregressive", "load_drafter", "load_model", "make_policy", "policy_for_budget", "self_drafter", "verify",
]
