"""Batched self-distillation: the compacting generator answers exactly what per-prompt greedy decoding does."""
import json
from types import SimpleNamespace

import torch

from opttree_core.models import LoadedModel
from opttree_core.tools.train.data import Sequence, _generate_batch, _generate_batch_hf, compute_features
from conftest import hf_greedy, random_prompt, tiny_model


def _cut(tokens: list[int], eos: set[int]) -> list[int]:
    ends = [i for i, t in enumerate(tokens) if t in eos]
    return tokens[: ends[0] + 1] if ends else tokens


def test_batched_generation_equals_per_prompt_greedy_with_rows_ending_at_different_steps():
    model = tiny_model(11, layers=2)
    prompts = [random_prompt(100 + i, length=3 + 2 * i).tolist() for i in range(5)]  # lengths 3..11: left padding
    free = [hf_greedy(model, torch.tensor(p), 12) for p in prompts]  # these stop at the config's EOS, 2
    eos = free[0][3]  # a second EOS the target really emits: row 0 stops after 4 tokens, others when they meet it
    model.generation_config.eos_token_id = [2, eos]
    expected = [_cut(f, {2, eos}) for f in free]
    assert len({len(e) for e in expected}) > 1  # rows do finish at different steps
    target = LoadedModel(model, SimpleNamespace(pad_token_id=0, eos_token_id=eos), "tiny")
    assert _generate_batch(target, prompts, 12) == expected
    assert _generate_batch_hf(target, prompts, 12) == expected
    assert _generate_batch(target, prompts[:1], 1) == [expected[0][:1]]


def test_three_layer_features_are_the_last_layer_then_the_chosen_layer_inputs(tmp_path):
    model = tiny_model(12, layers=4)
    target = LoadedModel(model, None, "tiny")
    seqs = [Sequence(random_prompt(i, length=6 + i).tolist(), 3, "t") for i in range(3)]
    feats = compute_features(target, seqs, tmp_path / "f.pt", batch_size=2, progress=False, layers=(0, 2, 3))
    with torch.no_grad():
        out = model.get_decoder()(torch.tensor([seqs[2].ids]), output_hidden_states=True)
    want = torch.cat([out.last_hidden_state[0], *(out.hidden_states[i][0] for i in (0, 2, 3))], dim=-1)
    assert feats[2].shape == (len(seqs[2].ids), 4 * 64)
    torch.testing.assert_close(feats[2].float(), want, atol=2e-2, rtol=2e-2)  # fp16 cache
    again = compute_features(target, seqs, tmp_path / "f.pt", progress=False, layers=(0, 2, 3))  # from the cache
    assert all(torch.equal(a, b) for a, b in zip(feats, again))


def _data(capsys, target, data, *args):
    from opttree_core.tools.train import cli as train_cli

    code = train_cli.main(["data", "--target", str(target), "--data", str(data), "--n-gsm8k", "0", "--n-humaneval", "0",
                           "--n-own", "6", "--max-new-tokens", "8", "--gen-batch", "4", "--no-progress", "--device",
                           "cpu", *args])
    return code, capsys.readouterr().err


def test_a_rerun_into_the_same_data_with_other_settings_is_refused_naming_the_setting(tmp_path, capsys):
    """Issue 26: another --max-new-tokens, a smaller --n-own or another --target reused the old answers."""
    from published_heads import save_target

    first, other = save_target(tmp_path / "first", layers=2), save_target(tmp_path / "other", layers=2, seed=1)
    data = tmp_path / "data"
    capsys.readouterr()
    assert _data(capsys, first, data) == (0, "")
    answers = (data / "sequences.jsonl").read_text()
    for args, needle in [(["--max-new-tokens", "4"], "made with --max-new-tokens 8 (now 4)"),
                         (["--n-own", "4"], ("to other prompts than these (6 prompts, now 4; made with --n-own 6 "
                                             "(now 4))")),
                         (["--seed", "3"], "made with --seed 0 (now 3)")]:
        code, err = _data(capsys, first, data, *args)
        assert code == 2 and err.count("\n") == 1 and needle in err and "use another --data directory" in err, err
    code, err = _data(capsys, other, data)
    assert code == 2 and f"made with another --target ({first.resolve()})" in err and err.count("\n") == 1, err
    assert (data / "sequences.jsonl").read_text() == answers  # nothing rebuilt over them
    assert _data(capsys, first, data) == (0, "")  # the same settings resume


def test_a_cache_from_before_the_record_is_checked_kept_and_recorded_in_one_line(tmp_path, capsys):
    from published_heads import save_target

    target, data = save_target(tmp_path / "target", layers=2), tmp_path / "data"
    capsys.readouterr()
    assert _data(capsys, target, data) == (0, "")
    record = data / "sequences.made-from.json"
    made = json.loads(record.read_text())
    record.unlink()  # as a cache made before records were kept
    code, err = _data(capsys, target, data, "--max-new-tokens", "4")
    assert code == 2 and "holds answers made with another --max-new-tokens" in err and err.count("\n") == 1, err
    code, err = _data(capsys, target, data, "--n-own", "5")
    assert code == 2 and "holds answers to other prompts than these" in err, err
    code, err = _data(capsys, target, data)
    assert code == 0 and err.count("\n") == 1 and "has no record of what it was made from" in err, err
    assert json.loads(record.read_text()) == made
