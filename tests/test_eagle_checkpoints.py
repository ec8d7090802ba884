"""Published EAGLE heads loaded from their own files: every layout variant decodes exactly like plain greedy
decoding with every policy, the drafter's q equals a plain re-implementation of the published forward,
and a bad or foreign checkpoint is one line naming the file and the key."""
import json

import pytest
import torch

from opttree_core import load_drafter
from opttree_core.decoding import DecodeConfig, generate, generate_autoregressive
from opttree_core.drafters.base import feature_layers
from opttree_core.drafters.eagle3 import default_feature_layers
from opttree_core.errors import OptTreeError
from opttree_core.grow import TreeBuilder
from opttree_core.models import load_model
from opttree_core.policies import HardwareAware
from opttree_core.policies.registry import POLICIES, policy_for_budget
from opttree_core.verify import prefill_target
from golden import flat_profile
from published_heads import (
    eagle1_forward,
    eagle3_forward,
    eagle3_probs,
    read_state,
    save_target,
    write_eagle1,
    write_eagle3,
)

VARIANTS = {  # name: (writer, options) — the layouts the published heads come in
    "eagle1-bias-embeddings-bin": ("eagle1", dict()),
    "eagle1-no-bias-no-embeddings-safetensors": ("eagle1", dict(bias=False, bias_field=False, embed=False,
                                                                weights="safetensors")),
    "eagle1-qwen2-qkv-bias": ("eagle1", dict(qkv=True)),
    "eagle3-vocab-maps-safetensors": ("eagle3", dict(draft_vocab=40)),
    "eagle3-full-vocab-no-maps-bin": ("eagle3", dict(weights="bin", dtype=torch.float16, embed=True)),
}


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    return load_model(str(save_target(tmp_path_factory.mktemp("target"))))


def write(kind, directory, target, **options):
    return (write_eagle1 if kind == "eagle1" else write_eagle3)(directory, target, **options)


@pytest.fixture(scope="module")
def heads(target, tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    return {name: write(kind, root / name, target, **options) for name, (kind, options) in VARIANTS.items()}


def prompt(seed=0, length=9):
    return torch.randint(3, 128, (length,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_published_layouts_decode_exactly_like_greedy_with_every_policy(target, heads, variant):
    drafter = load_drafter(str(heads[variant]), target)
    ids = prompt(1)
    expected = generate_autoregressive(target.model, ids, DecodeConfig(max_new_tokens=14, stop_at_eos=False)).token_ids
    for name in sorted(POLICIES):
        policy = policy_for_budget(name, 6)
        if isinstance(policy, HardwareAware):
            policy.use_profile(flat_profile())
        out = generate(target.model, drafter, policy, ids, DecodeConfig(max_new_tokens=14, stop_at_eos=False))
        assert out.token_ids == expected, name


def _draft_three_layers(drafter, target, ids):
    """q at the root, at its two best children and at the best child's two best children, as the
    growth loop would feed them."""
    _, features = prefill_target(target.model, ids, feature_layers(drafter))
    drafter.start(ids, features)
    tree = TreeBuilder(int(ids[-1]), max_depth=3, device="cpu")
    q_root = drafter.root_probs()
    layer1 = tree.add_best(tree.root, q_root[None], per_node=2, budget=2)
    q1 = drafter.expand(tree.feed(layer1))
    layer2 = tree.add_best(layer1[:1], q1[:1], per_node=2, budget=2)
    q2 = drafter.expand(tree.feed(layer2))
    return q_root, tree.tokens[layer1].tolist(), q1, tree.tokens[layer2].tolist(), q2


def _reference_eagle1(directory, target, ids, first, second):
    sd, config = read_state(directory), json.loads((directory / "config.json").read_text())
    embed, head = target.model.get_input_embeddings().weight.float(), target.model.get_output_embeddings().weight
    with torch.no_grad():
        features = target.model.model(ids[None]).last_hidden_state[0, :-1]  # f_0..f_{L-2}, after the final norm

        def q(tokens, feats):  # EAGLE's pairs (f_j, x_{j+1}) from position 0 (topK_genrate: input_ids[:, 1:])
            out = eagle1_forward(sd, config, embed[torch.tensor(tokens)], feats)
            return torch.softmax(out @ head.T, dim=-1), out

        q_root, out = q(ids[1:].tolist(), features)
        q1 = [q(ids[1:].tolist() + [t], torch.cat([features, out[-1:]]))[0][-1] for t in first]
        _, out1 = q(ids[1:].tolist() + [first[0]], torch.cat([features, out[-1:]]))
        q2 = [q(ids[1:].tolist() + [first[0], t], torch.cat([features, out[-1:], out1[-1:]]))[0][-1] for t in second]
    return q_root[-1], torch.stack(q1), torch.stack(q2)


def _reference_eagle3(directory, target, ids, first, second):
    sd, config = read_state(directory), json.loads((directory / "config.json").read_text())
    embed, vocab = target.model.get_input_embeddings().weight.float(), target.model.config.vocab_size
    with torch.no_grad():
        states = target.model.model(ids[None], output_hidden_states=True).hidden_states
        layers = default_feature_layers(target.model.config.num_hidden_layers)
        g = torch.cat([states[i][0, :-1] for i in layers], dim=-1)  # (L - 1, 3H), before the final norm
        x = g @ sd["fc.weight"].T

        def run(tokens, hidden):
            return eagle3_forward(sd, config, embed[torch.tensor(tokens)], hidden)

        out = run(ids[1:].tolist(), x)
        q1, q2 = [], []
        for t in first:  # a tree node feeds the head's own output at its parent, not fc(...)
            q1.append(eagle3_probs(sd, config, run(ids[1:].tolist() + [t], torch.cat([x, out[-1:]]))[-1], vocab))
        out1 = run(ids[1:].tolist() + [first[0]], torch.cat([x, out[-1:]]))
        for t in second:
            hidden = torch.cat([x, out[-1:], out1[-1:]])
            q2.append(eagle3_probs(sd, config, run(ids[1:].tolist() + [first[0], t], hidden)[-1], vocab))
    return eagle3_probs(sd, config, out[-1], vocab), torch.stack(q1), torch.stack(q2)


@pytest.mark.parametrize("variant", ["eagle1-bias-embeddings-bin", "eagle1-qwen2-qkv-bias", "eagle1-two-layers",
                                     "eagle3-vocab-maps-safetensors", "eagle3-full-vocab-no-maps-bin"])
def test_drafter_q_equals_the_published_forward_on_the_same_weights(target, heads, tmp_path, variant):
    directory = heads.get(variant) or write_eagle1(tmp_path / variant, target, layers=2, bias=False, bias_field=False)
    drafter = load_drafter(str(directory), target)
    ids = prompt(2)
    q_root, first, q1, second, q2 = _draft_three_layers(drafter, target, ids)
    reference = _reference_eagle3 if variant.startswith("eagle3") else _reference_eagle1
    r_root, r1, r2 = reference(directory, target, ids, first, second)
    for ours, theirs in ((q_root, r_root), (q1, r1), (q2, r2)):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=2e-3)  # fp32 (HF norms), peaky softmaxes
    if variant == "eagle3-vocab-maps-safetensors":  # only the 40 mapped target ids can be drafted
        assert int((q_root > 0).sum()) == 40 and drafter.out.vocab is not None


def test_heads_for_another_target_are_one_line_naming_the_mismatch(target, tmp_path):
    other = load_model(str(save_target(tmp_path / "small", hidden=32, layers=8)))
    wrong_vocab = load_model(str(save_target(tmp_path / "vocab", vocab=96)))
    for kind in ("eagle1", "eagle3"):
        head = write(kind, tmp_path / kind, target)
        for foreign, field in ((other, "hidden_size"), (wrong_vocab, "vocab_size")):
            with pytest.raises(OptTreeError) as err:
                load_drafter(str(head), foreign)
            message = str(err.value)
            assert "\n" not in message and "config.json" in message and f"'{field}'" in message, message


def _corrupt(directory, change):
    state = read_state(directory)
    config = json.loads((directory / "config.json").read_text())
    change(state, config)
    (directory / "config.json").write_text(json.dumps(config))
    for f in ("pytorch_model.bin", "model.safetensors"):
        (directory / f).unlink(missing_ok=True)
    torch.save(state, directory / "pytorch_model.bin")


BAD = {  # name: (layout, change to the files, the key the error must name)
    "missing key": ("eagle1", lambda s, c: s.pop("layers.0.mlp.down_proj.weight"), "layers.0.mlp.down_proj.weight"),
    "wrong shape": ("eagle1", lambda s, c: s.update({"fc.weight": s["fc.weight"][:, :70]}), "fc.weight"),
    "layer 0 input norm": ("eagle1", lambda s, c: s.update({"layers.0.input_layernorm.weight": torch.ones(64)}),
                           "layers.0.input_layernorm.weight"),
    "fc bias the config denies": ("eagle1", lambda s, c: c.update({"bias": False}), "fc.bias"),
    "unknown layout": ("eagle1", lambda s, c: [s.update({k.replace("layers.", "blocks."): s.pop(k)})
                                               for k in [k for k in s if k.startswith("layers.")]], "blocks."),
    "missing d2t": ("eagle3", lambda s, c: s.pop("d2t"), "d2t"),
    "float d2t": ("eagle3", lambda s, c: s.update({"d2t": s["d2t"].float()}), "d2t"),
    "t2d against d2t": ("eagle3", lambda s, c: s.update({"t2d": ~s["t2d"]}), "t2d"),
    "midlayer shape": ("eagle3", lambda s, c: s.update({"midlayer.self_attn.q_proj.weight": torch.zeros(64, 64)}),
                       "midlayer.self_attn.q_proj.weight"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_checkpoints_are_one_line_naming_the_file_and_the_key(target, tmp_path, case):
    layout, change, key = BAD[case]
    directory = write(layout, tmp_path / "head", target, **({"draft_vocab": 40} if layout == "eagle3" else {}))
    _corrupt(directory, change)
    with pytest.raises(OptTreeError) as err:
        load_drafter(str(directory), target)
    message = str(err.value)
    assert "\n" not in message and key in message, message
    assert "pytorch_model.bin" in message or "config.json" in message, message


def test_hub_ids_fetch_config_and_weights_through_huggingface_hub(target, heads, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    served, fetched = heads["eagle3-vocab-maps-safetensors"], []

    def fake_download(repo_id, filename, **kwargs):
        fetched.append(filename)
        if not (served / filename).is_file():
            raise LocalEntryNotFoundError(f"{repo_id} has no {filename}")
        return str(served / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    drafter = load_drafter("someone/EAGLE3-tiny", target)
    assert drafter.feature_layers == default_feature_layers(8)
    assert fetched == ["config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json",
                       "model.safetensors"]


def test_a_hub_repo_that_is_a_plain_model_is_left_to_load_model(tmp_path, monkeypatch):
    """A sharded model's index names no fc.weight: no shard is fetched, and the repo is not an EAGLE head."""
    import huggingface_hub

    from opttree_core.eagle_files import fetch_hub_checkpoint

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (repo / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors"}}))
    fetched = []

    def fake_download(repo_id, filename, **kwargs):
        fetched.append(filename)
        return str(repo / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert fetch_hub_checkpoint("someone/big-model") is None
    assert fetched == ["config.json", "model.safetensors.index.json"]


@pytest.mark.parametrize("weight_map,needle", [
    ([1, 2], "'weight_map' must map tensor names to file names"),
    ({"fc.weight": 5}, "'weight_map' must map tensor names to file names"),
    ({"fc.weight": "../outside.safetensors"}, "names '../outside.safetensors', a file outside the head's directory"),
    ({"fc.weight": "/etc/passwd"}, "a file outside the head's directory: refused"),
])
def test_a_weights_index_is_checked_before_it_is_followed(target, tmp_path, weight_map, needle):
    """Issue 26 item 3: {"weight_map": [1, 2]} gave an AttributeError, {"fc.weight": 5} a TypeError, and a
    path outside the head's directory was followed."""
    directory = write_eagle1(tmp_path / "head", target)
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(OptTreeError) as err:
        load_drafter(str(directory), target)
    assert needle in str(err.value) and "\n" not in str(err.value) and "index.json" in str(err.value)


@pytest.mark.parametrize("layout", ["eagle1", "eagle3"])
def test_a_head_with_non_finite_weights_is_refused_naming_the_tensor(target, tmp_path, layout):
    """Security (issue 26): a head with NaN or inf weights loaded and was silently useless."""
    directory = write(layout, tmp_path / "head", target, **({"draft_vocab": 40} if layout == "eagle3" else {}))
    _corrupt(directory, lambda state, config: state["fc.weight"].view(-1)[:3].fill_(float("nan")))
    with pytest.raises(OptTreeError, match=r"pytorch_model.bin: tensor fc.weight holds 3 NaN or infinite value"):
        load_drafter(str(directory), target)
