"""Shared fixtures: tiny random Llama models (CPU, fp32) and a scripted drafter."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from opttree_core.skinny import use_skinny_matmul

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the figures/ scripts live beside the packages (tests import figures.*)

VOCAB = 64


def tiny_model(seed: int, vocab_size: int = VOCAB, layers: int = 2, init_range: float = 0.3, **overrides):
    """A tiny random Llama; a large init range makes its greedy choices well separated."""
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                         initializer_range=init_range, bos_token_id=1, eos_token_id=2, pad_token_id=0, **overrides)
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config).eval()
    use_skinny_matmul(model)  # the kernels load_model gives CPU models
    return model


def perturbed_copy(model, seed: int, noise: float):
    """A draft that agrees with ``model`` often but not always: its weights plus Gaussian noise."""
    draft = tiny_model(0, vocab_size=model.config.vocab_size, layers=model.config.num_hidden_layers,
                       init_range=model.config.initializer_range)
    draft.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * noise * p.std().clamp(min=1e-3))
    return draft


def hf_greedy(model, prompt: torch.Tensor, max_new_tokens: int) -> list[int]:
    """Reference: transformers' own greedy generate (explicit mask: a prompt may contain the pad id)."""
    mask = torch.ones(1, prompt.numel(), dtype=torch.long, device=prompt.device)
    out = model.generate(prompt[None], attention_mask=mask,
                         max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=model.config.pad_token_id)
    return out[0, prompt.numel():].tolist()


def random_prompt(seed: int, length: int = 7, vocab_size: int = VOCAB) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab_size, (length,), generator=gen)


def tree_and_path_logits(target, prompt: torch.Tensor, tree, sequential: bool = False):
    """(the tree's logits at every node (N, V), for each node the reference logits of its path).

    The tree is scored after ``prompt`` (its last token is the tree's root). A reference is one
    forward over prompt + the node's path, or with ``sequential`` the path fed one token per
    forward after a prefill, as AR decoding computes it."""
    from opttree_core.verify import prefill_target, score_root, score_tree

    state, _ = prefill_target(target, prompt)
    logits = score_tree(state, tree).logits  # (N, V)
    tokens, references = tree.tokens.tolist(), []
    for node in range(tree.n_nodes):
        path = [tokens[i] for i in tree.path_to(node)]
        if sequential:
            state, _ = prefill_target(target, prompt)
            for token in path:
                score_root(state)
                state.advance([token])
            references.append(score_root(state).logits[-1])
        else:
            with torch.no_grad():
                references.append(target(torch.cat([prompt, torch.tensor(path, dtype=torch.long)])[None]).logits[0, -1])
    return logits, references


def load_benchmark(name: str):
    """``benchmarks/NAME.py`` imported as a module (the benchmarks are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def first_two_tokens_pvalue(target, drafter, policy, prompt: torch.Tensor, runs: int, children: str,
                            vocab_size: int = 8) -> float:
    """Two-sample χ² p-value: the first two tokens of ``runs`` tree-sampled outputs against ``runs``
    plainly sampled ones (T = 1, different seeds), as a distribution over the vocab_size² pairs."""
    from scipy.stats import chi2_contingency

    from opttree_core.decoding import DecodeConfig, generate, generate_autoregressive

    counts = torch.zeros(2, vocab_size * vocab_size)
    for seed in range(runs):
        config = DecodeConfig(max_new_tokens=2, temperature=1.0, seed=seed, stop_at_eos=False, children=children)
        tree = generate(target, drafter, policy, prompt, config).token_ids
        plain = generate_autoregressive(target, prompt, DecodeConfig(max_new_tokens=2, temperature=1.0,
                                                                     seed=10_000 + seed, stop_at_eos=False)).token_ids
        counts[0, tree[0] * vocab_size + tree[1]] += 1
        counts[1, plain[0] * vocab_size + plain[1]] += 1
    keep = counts.sum(0) > 0
    return float(chi2_contingency(counts[:, keep].numpy()).pvalue)


class ScriptedDrafter:
    """A drafter whose distribution below a path is a fixed function of that path.

    q(path) = softmax(sharpness · z), z ~ N(0, 1) seeded by a hash of the path. It counts its
    calls so tests can check how many draft forwards a policy spends.
    """

    name = "scripted"

    def __init__(self, vocab_size: int = 6, sharpness: float = 2.0, salt: str = ""):
        self.vocab_size, self.sharpness, self.salt = vocab_size, sharpness, salt
        self.calls = 0

    def probs(self, path: tuple[int, ...]) -> torch.Tensor:
        digest = hashlib.sha256(f"{self.salt}{path}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        return torch.softmax(self.sharpness * torch.randn(self.vocab_size, generator=gen), dim=0)

    def start(self, prompt_ids, features=None):
        self.calls = 0

    def root_probs(self):
        self.calls += 1
        return self.probs(())

    def expand(self, layer):
        """q below each node of the ``TreeLayer``, a function of the node's token path."""
        self.calls += 1
        return torch.stack([self.probs(tuple(path)) for path in layer.paths.tolist()])

    def commit(self, tokens, features=None, accepted_slots=()):
        pass


TREEVIZ_LOGS = Path(__file__).parent / "data" / "treeviz"


def _tree_row(prompt_id: str, data) -> dict:
    meta, steps = data.meta, data.steps
    budget = meta["policy_config"].get("nodes", meta["policy_config"].get("length"))
    method = f"{meta['policy']}-{budget}@{meta['draft']}"
    tokens = len(meta["token_ids"])
    return {"method": method, "kind": "tree", "policy": meta["policy"], "budget": budget, "drafter": meta["draft"],
            "temperature": 0.0, "dataset": "tiny", "category": "tiny", "prompt_id": prompt_id,
            "new_tokens": tokens, "steps": len(steps), "mal": tokens / len(steps), "seconds": meta["seconds"],
            "tokens_per_s": tokens / meta["seconds"], "draft_s": steps["draft_s"].sum(),
            "verify_s": steps["verify_s"].sum(), "build_s": float("nan"), "expected_acceptance": steps["ea"].mean(),
            "log_dir": f"logs/{method.replace('@', '--')}/{prompt_id}", "output_matches_ar": True}


def make_tiny_run(run: Path, ar_seconds: float, prompts=("p0", "p1"), logs: str = "tiny-*",
                  config: dict | None = None, ar_seconds_per_prompt: dict | None = None) -> Path:
    """A bench run folder (results.parquet, config.json, logs/) around the real tiny tree logs of
    tests/data/treeviz matching ``logs``: each log stands for every prompt in ``prompts``; AR makes 40
    tokens in ``ar_seconds`` (or ``ar_seconds_per_prompt[prompt]``)."""
    import shutil

    import pandas as pd

    from opttree_core.records import RESULT_COLUMNS, read_log

    rows = []
    for prompt_id in prompts:
        seconds = (ar_seconds_per_prompt or {}).get(prompt_id, ar_seconds)
        rows.append({c: None for c in RESULT_COLUMNS} | {
            "method": "ar", "kind": "ar", "temperature": 0.0, "dataset": "tiny", "category": "tiny",
            "prompt_id": prompt_id, "new_tokens": 40, "steps": 40, "mal": 1.0, "seconds": seconds,
            "tokens_per_s": 40 / seconds, "output_matches_ar": True})
        for log in sorted(TREEVIZ_LOGS.glob(logs)):
            row = _tree_row(prompt_id, read_log(log))
            shutil.copytree(log, run / row["log_dir"])
            rows.append(row)
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS).astype({"budget": "Int64"})
    results.to_parquet(run / "results.parquet", index=False)
    (run / "config.json").write_text(json.dumps(config or {"fixture": "tests/data/treeviz"}))
    return run


def text_boxes(fig) -> list[tuple[str, object]]:
    """Every title, axis label and figure label drawn, with its box in display pixels."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [fig._suptitle, fig._supxlabel, fig._supylabel]
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t is not None and t.get_text()]


@pytest.fixture(scope="session")
def target():
    return tiny_model(seed=1)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for the Ray tests, shut down at the end even when a test fails;
    ``bench --ray`` and ``train --ray`` use a connection they find instead of making one."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
