"""Draft vocabularies: drafting from the K most frequent tokens stays lossless and loads by default."""
import json

import pytest
import torch

from opttree_core import load_drafter
from opttree_core.decoding import DecodeConfig, generate
from opttree_core.drafters.draft_lm import build_draft_lm, draft_lm_config
from opttree_core.draft_vocab import DraftVocab, VocabHead, count_tokens, load_counts, save_counts
from opttree_core.drafters import DraftLMDrafter
from opttree_core.drafters.eagle import EagleDrafter, EagleHead, head_config
from opttree_core.errors import OptTreeError
from opttree_core.models import load_model, tiny_llama_config
from opttree_core.policies import OptTreeConfig, OptTreePolicy
from opttree_core.shipped import save_draft
from opttree_core.tools.train.recipes import EagleRecipe
from opttree_core.treelog import TreeLog
from conftest import hf_greedy, random_prompt, tiny_model

POLICY = OptTreePolicy(OptTreeConfig(nodes=10, threshold=0.0, max_depth=4))


def test_most_frequent_ranks_by_count_then_by_id():
    counts = torch.tensor([5, 0, 9, 5, 1, 9])
    assert DraftVocab.most_frequent(counts, 4).ids.tolist() == [2, 5, 0, 3]
    assert DraftVocab.most_frequent(counts, 4).coverage(counts) == pytest.approx(28 / 29)
    assert count_tokens([[2, 2, 5], [0]], 6).tolist() == [1, 0, 2, 0, 0, 1]


@pytest.mark.parametrize("ids,needle", [([], "1 to 6"), ([0, 0], "distinct"), ([6], "within")])
def test_bad_vocabularies_are_one_line_errors(ids, needle):
    with pytest.raises(OptTreeError, match=needle):
        DraftVocab(torch.tensor(ids, dtype=torch.long), 6)
    with pytest.raises(OptTreeError, match="outside"):
        DraftVocab.most_frequent(torch.ones(6), 7)


def test_restricted_probs_are_the_full_softmax_renormalised_on_the_vocabulary():
    torch.manual_seed(0)
    lm_head = torch.nn.Linear(16, 10, bias=False)
    vocab = DraftVocab(torch.tensor([7, 1, 4]), 10)
    hidden = torch.randn(3, 16)
    full = VocabHead(lm_head).probs(hidden, 0.7)
    sub = VocabHead(lm_head, vocab).probs(hidden, 0.7)
    expected = torch.zeros_like(full)
    expected[:, [7, 1, 4]] = full[:, [7, 1, 4]] / full[:, [7, 1, 4]].sum(-1, keepdim=True)
    torch.testing.assert_close(sub, expected)
    assert VocabHead(lm_head, vocab).probs(hidden[0], 1.0).shape == (10,)


@pytest.mark.parametrize("seed", range(3))
def test_greedy_output_with_a_draft_vocabulary_equals_plain_greedy(seed):
    target = tiny_model(seed, layers=3)
    torch.manual_seed(seed)
    vocab = DraftVocab(torch.randperm(64)[:20], 64)
    drafters = [EagleDrafter(EagleHead(head_config(target.config)), target, vocab=vocab),
                DraftLMDrafter(build_draft_lm(target, draft_lm_config(target.config, 1, 64)), vocab=vocab)]
    prompt = random_prompt(seed)
    expected = hf_greedy(target, prompt, 30)
    for drafter in drafters:
        log = TreeLog(max_steps=8, max_nodes=11)
        assert generate(target, drafter, POLICY, prompt, DecodeConfig(max_new_tokens=30), log=log).token_ids == expected
        nodes = log.to_frames().nodes
        assert set(nodes.loc[nodes.depth > 0, "token"]) <= set(vocab.ids.tolist())


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved EAGLE draft of a tiny target, with token counts and a default draft vocabulary of 16."""
    target = load_model(tiny_llama_config(initializer_range=0.3))
    directory = tmp_path_factory.mktemp("draft")
    counts = torch.arange(target.model.config.vocab_size).flip(0)  # token 0 most frequent
    save_counts(directory / "counts.safetensors", counts, {"target": "tiny"})
    recipe = EagleRecipe(target.model)
    manifest = save_draft(directory / "my-eagle", "eagle", recipe.own_state(), recipe.config, target.name,
                          target.model.config, {}, token_counts=directory / "counts.safetensors", draft_vocab=16)
    return target, manifest


def test_saved_draft_loads_its_default_vocabulary_and_takes_another(saved):
    target, manifest = saved
    assert load_drafter(str(manifest), target).out.vocab.ids.tolist() == list(range(16))
    assert len(load_drafter(str(manifest), target, draft_vocab=5).out.vocab) == 5
    assert load_drafter(str(manifest), target, draft_vocab=0).out.vocab is None
    counts, meta = load_counts(manifest.parent / json.loads(manifest.read_text())["token_counts"])
    assert counts[0] == target.model.config.vocab_size - 1 and meta == {"target": "tiny"}


def test_a_vocabulary_without_counts_is_a_one_line_error(saved, tmp_path):
    target, manifest = saved
    record = json.loads(manifest.read_text())
    del record["token_counts"]
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(record))
    bare.with_suffix(".safetensors").write_bytes(manifest.with_suffix(".safetensors").read_bytes())
    with pytest.raises(OptTreeError, match="has no token counts"):
        load_drafter(str(bare), target, draft_vocab=8)
    with pytest.raises(OptTreeError, match="needs token counts"):
        load_drafter("ngram", target, draft_vocab=8)


def test_counts_files_are_byte_identical_across_processes_and_old_ones_still_load(tmp_path):
    """The same counts and meta give the same bytes in any process (train data --ray's shards must equal
    the single-process cache byte for byte); a file from before, one metadata key per entry, still loads."""
    import subprocess
    import sys

    from safetensors.torch import save_file

    script = ("import sys, torch; from pathlib import Path; from opttree_core.draft_vocab import save_counts; "
              "save_counts(Path(sys.argv[1]), torch.arange(7), {'target': 't', 'sequences': 3, 'sources': ['a', 'b']})")
    paths = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for path in paths:
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=120)
    assert len({p.read_bytes() for p in paths}) == 1
    counts, meta = load_counts(paths[0])
    assert counts.tolist() == list(range(7)) and meta == {"target": "t", "sequences": 3, "sources": ["a", "b"]}
    save_file({"token_counts": torch.arange(3)}, str(tmp_path / "old.safetensors"),
              metadata={"target": '"t"', "sequences": "3"})
    assert load_counts(tmp_path / "old.safetensors")[1] == {"target": "t", "sequences": 3}
