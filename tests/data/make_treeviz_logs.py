"""Regenerate the small tree logs under tests/data/treeviz/ (tiny random Llama models, CPU, ~30 s).

    .venv/bin/python tests/data/make_treeviz_logs.py

Two draft/target groups (a draft close to the target and a noisier one), OPT-Tree at
three node budgets and a chain, one prompt each. ``smollm2-chat`` beside them is a copy of
one `make demo` log (SmolLM2-135M with the self-draft), kept for real token texts.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: conftest's tiny models

from conftest import perturbed_copy, tiny_model

from opttree_core import DecodeConfig, DraftLMDrafter, LoadedModel, Session, make_policy
from opttree_core.models import tiny_tokenizer

PROMPT = "t5 t9 t20 t7 t33 t41 t12"
RUNS = [("opt-tree", {"nodes": 4, "threshold": 0.0, "max_depth": 5}),
        ("opt-tree", {"nodes": 12, "threshold": 0.0, "max_depth": 5}),
        ("opt-tree", {"nodes": 24, "threshold": 0.0, "max_depth": 6}),
        ("chain", {"length": 4})]
DRAFTS = {"tiny-close": 0.05, "tiny-noisy": 0.2}


def main(out: Path = HERE / "treeviz") -> None:
    tokenizer = tiny_tokenizer(64)
    target = LoadedModel(model=tiny_model(2), tokenizer=tokenizer, name="tiny-target")
    prompt_ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"][0]
    config = DecodeConfig(max_new_tokens=40, stop_at_eos=False)
    for draft_name, noise in DRAFTS.items():
        drafter = DraftLMDrafter(perturbed_copy(target.model, 2, noise=noise), name=draft_name)
        for policy_name, params in RUNS:
            session = Session(target, drafter, make_policy(policy_name, **params))
            budget = params.get("nodes", params.get("length"))
            path = out / f"{draft_name}-{policy_name}-{budget}"
            result = session.run(prompt_ids, config, prompt_text=PROMPT, log_path=path).result
            print(f"{path.name}: {result.steps} steps, MAL {result.mal:.2f}")


if __name__ == "__main__":
    main()
