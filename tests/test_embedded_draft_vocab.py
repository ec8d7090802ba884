"""A draft model drafting from a draft vocabulary: an int8 LM head cut to the K tokens an embedded
model's shipped counts rank first gives the full int8 head's probabilities renormalised over those
K (zero elsewhere), tree decoding with it stays exactly plain greedy, and the spec names it
("qwen2.5-coder-0.5b:int8:vocab32768")."""
import pytest
import torch

from conftest import hf_greedy, random_prompt
from opttree_core.decoding import DecodeConfig, generate
from opttree_core.draft_vocab import DraftVocab, VocabHead, load_counts
from opttree_core.drafters import DraftLMDrafter
from opttree_core.drafters.registry import embedded_draft_vocab, load_drafter, vocab_suffix
from opttree_core.embedded import EMBEDDED
from opttree_core.errors import OptTreeError
from opttree_core.models import load_model
from opttree_core.policies import make_policy
from opttree_core.shipped import WEIGHTS_DIR
from opttree_core.weight_only import INT4_MAX_ROWS, MAX_ROWS, Int4Linear, Int8Linear, quantize_linears
from test_qwen2 import tiny_qwen2


@pytest.mark.parametrize("rows", [1, MAX_ROWS, MAX_ROWS + 3])  # the int8 product, and the original weight past it
def test_an_int8_head_cut_to_a_vocabulary_is_the_full_heads_distribution_renormalised(rows):
    torch.manual_seed(rows)
    head = Int8Linear(torch.nn.Linear(16, 50, bias=False))
    vocab = DraftVocab(torch.tensor([7, 3, 41, 0, 19, 22]), 50)
    hidden = torch.randn(rows, 16)
    q = VocabHead(head, vocab).probs(hidden, temperature=0.7)
    full = head(hidden)[:, vocab.ids]
    assert q.shape == (rows, 50) and torch.all(q[:, [i for i in range(50) if i not in vocab.ids]] == 0)
    torch.testing.assert_close(q[:, vocab.ids], torch.softmax(full / 0.7, dim=-1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows", [1, INT4_MAX_ROWS, INT4_MAX_ROWS + 3])  # the int4 product, and the original weight
@pytest.mark.parametrize("size", [32, 6])  # a cut the int4 kernel packs, and one it cannot (int8 then)
def test_an_int4_head_cut_to_a_vocabulary_is_quantized_alike_and_renormalised(rows, size):
    torch.manual_seed(rows)
    head = Int4Linear(torch.nn.Linear(32, 64, bias=False))
    vocab = DraftVocab(torch.randperm(64)[:size], 64)
    hidden = torch.randn(rows, 32)
    vocab_head = VocabHead(head, vocab)
    assert isinstance(vocab_head.sub_head, Int4Linear if size % 16 == 0 else Int8Linear)
    q = vocab_head.probs(hidden, temperature=0.7)
    assert q.shape == (rows, 64) and torch.all(q.sum(-1).sub(1).abs() < 1e-5)
    outside = [i for i in range(64) if i not in vocab.ids]
    assert torch.all(q[:, outside] == 0)
    expected = torch.softmax(vocab_head.sub_head(hidden) / 0.7, dim=-1)
    torch.testing.assert_close(q[:, vocab.ids], expected, rtol=1e-5, atol=1e-6)
    if size % 16 == 0:  # the cut int4 head's codes are the full head's rows, re-grouped alike
        torch.testing.assert_close(q[:, vocab.ids], torch.softmax(head(hidden)[:, vocab.ids] / 0.7, dim=-1),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_greedy_tree_decoding_with_an_int8_draft_on_a_draft_vocabulary_equals_plain_greedy(seed):
    target = tiny_qwen2(seed)
    draft = tiny_qwen2(seed + 100, hidden=24, layers=1)
    quantize_linears(draft)
    vocab = DraftVocab(torch.randperm(target.config.vocab_size, generator=torch.Generator().manual_seed(seed))[:40],
                       target.config.vocab_size)  # some of the target's tokens can't be drafted: it emits them itself
    prompt = random_prompt(seed, length=5)
    result = generate(target, DraftLMDrafter(draft, vocab=vocab), make_policy("opt-tree", nodes=8, threshold=0.0,
                                                                             max_depth=5),
                      prompt, DecodeConfig(max_new_tokens=24, stop_at_eos=False))
    assert result.token_ids == hf_greedy(target, prompt, 24)


def test_a_draft_models_spec_names_its_vocabulary_last():
    assert vocab_suffix("qwen2.5-coder-0.5b:int8:vocab32768") == ("qwen2.5-coder-0.5b:int8", 32768)
    assert vocab_suffix("qwen2.5-coder-0.5b:vocab8") == ("qwen2.5-coder-0.5b", 8)
    assert vocab_suffix("qwen2.5-coder-0.5b:int8") == ("qwen2.5-coder-0.5b:int8", None)
    assert vocab_suffix("dir:vocabulary") == ("dir:vocabulary", None)


def test_the_pairs_shipped_counts_rank_its_chat_tokens_and_a_vocabulary_loads_from_them():
    counts, meta = load_counts(WEIGHTS_DIR / EMBEDDED["qwen2.5-coder-0.5b"].token_counts)
    assert counts.numel() == 151936 and meta["tokenizer_of"] == "qwen2.5-coder-0.5b"
    assert meta["sources"]["gsm8k_train_chats"] > 7000 and meta["sources"]["python_stdlib_files"] > 500
    vocab = embedded_draft_vocab("qwen2.5-coder-0.5b", 32768, 151936)
    im_end, im_start = 151645, 151644  # <|im_end|> ends every answer: the draft must be able to propose it
    assert len(vocab) == 32768 and {im_end, im_start} <= set(vocab.ids.tolist())
    assert embedded_draft_vocab("qwen2.5-coder-0.5b", 0, 151936) is None


def test_a_draft_vocabulary_without_counts_or_out_of_range_is_a_one_line_error():
    target = load_model("tiny-random")
    with pytest.raises(OptTreeError, match="draft 'tiny-random' ships none"):
        load_drafter("tiny-random:int8:vocab8", target)
    with pytest.raises(OptTreeError, match="names its vocabulary size and draft_vocab asks for 16"):
        load_drafter("tiny-random:vocab8", target, draft_vocab=16)
    with pytest.raises(OptTreeError, match="outside 1..151935"):
        embedded_draft_vocab("qwen2.5-coder-0.5b", 151936, 151936)
    with pytest.raises(OptTreeError, match="cover 151936 tokens, the model has 1000"):
        embedded_draft_vocab("qwen2.5-coder-0.5b", 8, 1000)


class _ByteTokenizer:
    """Token ids are a text's UTF-8 bytes; a chat is its turns joined by byte 0."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(text.encode())}

    def apply_chat_template(self, chat, tokenize=True, return_dict=False):
        return [b for turn in chat for b in [0, *turn["content"].encode()]]


def test_corpus_counts_count_gsm8k_chats_and_the_standard_librarys_sources(tmp_path):
    from opttree_core.tools.corpus_counts import corpus_counts, main

    gsm8k = tmp_path / "train.jsonl"
    gsm8k.write_text('{"question": "ab", "answer": "b"}\n{"question": "c", "answer": "#### 4"}\n')
    stdlib = tmp_path / "lib"
    (stdlib / "test").mkdir(parents=True)
    (stdlib / "os.py").write_text("aa")
    (stdlib / "test" / "test_os.py").write_text("zzzz")  # tests are not the library's code
    (stdlib / "bad.py").write_bytes(b"\xff\xfe")  # not UTF-8: skipped
    counts, meta = corpus_counts(_ByteTokenizer(), 256, gsm8k, stdlib)
    assert counts[0] == 4 and counts[ord("a")] == 3 and counts[ord("b")] == 2 and counts[ord("z")] == 0
    assert meta["sources"]["gsm8k_train_chats"] == 2 and meta["sources"]["python_stdlib_files"] == 1
    assert main(["--model", "tiny-random", "--gsm8k", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "c").exists()
