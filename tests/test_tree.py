"""DraftTree, TreeBuilder, TreeLayer and the growth loop: structure, ancestor masks, positions by
depth, drafter slots, one draft forward per layer."""
import torch

from opttree_core.grow import GrowthRule, TreeBuilder, grow
from opttree_core.tree import DraftTree
from conftest import ScriptedDrafter


def expand_layer(builder, frontier, probs, per_node, layer_budget):
    return builder.add_best(frontier, probs, per_node=per_node, budget=layer_budget)

PATHS = [[5, 6, 7], [5, 8], [9], [9, 10, 11, 12], [5, 6, 13]]


def test_from_paths_shares_prefixes_and_orders_breadth_first():
    tree = DraftTree.from_paths(3, PATHS)
    assert tree.n_nodes == 1 + 9  # root, 5, 9, 6, 8, 10, 7, 13, 11, 12
    assert tree.tokens.tolist() == [3, 5, 9, 6, 8, 10, 7, 13, 11, 12]
    assert tree.depth.tolist() == [0, 1, 1, 2, 2, 2, 3, 3, 3, 4]
    assert all(p < i for i, p in enumerate(tree.parents.tolist()) if i)
    assert tree.rank.tolist() == [0, 0, 1, 0, 1, 0, 0, 1, 0, 0]


def test_ancestor_mask_matches_parent_walk():
    tree = DraftTree.from_paths(3, PATHS)
    for i in range(tree.n_nodes):
        expected = {i, *tree.path_to(i), 0}
        assert set(tree.ancestor_mask[i].nonzero().squeeze(1).tolist()) == expected


def test_ancestor_mask_of_deep_and_wide_trees_matches_parent_walk():
    """Pointer doubling covers every depth: a 40-deep chain with side branches, and a root-only tree."""
    paths = [list(range(10, 50)), [10, 11, 60], [70, 71], [10, 80]]
    for tree in (DraftTree.from_paths(3, paths), DraftTree.root_only(3)):
        for i in range(tree.n_nodes):
            assert set(tree.ancestor_mask[i].nonzero().squeeze(1).tolist()) == {i, *tree.path_to(i), 0}


def test_positions_follow_depth_not_index():
    tree = DraftTree.from_paths(3, PATHS)
    assert tree.position_ids(100).tolist() == [100 + d for d in tree.depth.tolist()]


def test_layerwise_expansion_keeps_p_hat_products_and_parent_order():
    builder = TreeBuilder(root_token=0, max_depth=3, device="cpu")
    probs = torch.tensor([[0.1, 0.6, 0.3]])
    layer1 = expand_layer(builder, builder.layers[0], probs, per_node=2, layer_budget=2)
    assert builder.tokens[layer1].tolist() == [1, 2]
    assert builder.rank[layer1].tolist() == [0, 1]
    probs2 = torch.tensor([[0.5, 0.5, 0.0], [0.9, 0.05, 0.05]])
    layer2 = expand_layer(builder, layer1, probs2, per_node=2, layer_budget=3)
    got = sorted(zip(builder.parents[layer2].tolist(), builder.tokens[layer2].tolist(),
                     [round(x, 4) for x in builder.p_hat[layer2].tolist()]))
    assert got == [(1, 0, 0.3), (1, 1, 0.3), (2, 0, 0.27)]
    tree = builder.whole_tree()
    assert torch.allclose(tree.p_hat[tree.depth > 0].sum(), torch.tensor(0.6 + 0.3 + 0.3 + 0.3 + 0.27))


def test_ranking_breaks_ties_toward_shallower_nodes():
    builder = TreeBuilder(root_token=0, max_depth=3, device="cpu")
    layer1 = expand_layer(builder, builder.layers[0], torch.tensor([[1.0, 0.0]]), per_node=1, layer_budget=1)
    layer2 = expand_layer(builder, layer1, torch.tensor([[1.0, 0.0]]), per_node=1, layer_budget=1)
    assert builder.p_hat[layer2].item() == builder.p_hat[layer1].item() == 1.0
    assert builder.ranking().tolist() == [layer1.item(), layer2.item()]


def test_subtree_reindexes_parents():
    builder = TreeBuilder(root_token=0, max_depth=2, device="cpu")
    layer1 = expand_layer(builder, builder.layers[0], torch.tensor([[0.2, 0.5, 0.3]]), per_node=3, layer_budget=3)
    layer2 = expand_layer(builder, layer1[:1], torch.tensor([[0.9, 0.1, 0.0]]), per_node=1, layer_budget=1)
    tree = builder.subtree(torch.cat([layer1[:1], layer2]))
    assert tree.tokens.tolist() == [0, 1, 0]
    assert tree.parents.tolist() == [-1, 0, 1]


def test_buffers_grow_as_layers_are_added():
    builder = TreeBuilder(root_token=7, max_depth=2, device="cpu", capacity=2)
    layer1 = expand_layer(builder, builder.root, torch.softmax(torch.arange(10.0)[None], 1), 5, 5)
    layer2 = expand_layer(builder, layer1, torch.softmax(torch.arange(10.0).repeat(5, 1), 1), 3, 15)
    assert builder.capacity >= builder.size == 21
    tree = builder.whole_tree()
    assert tree.tokens[0] == 7 and (tree.parents[1:6] == 0).all() and (tree.depth[6:] == 2).all()
    assert torch.equal(tree.p_hat[6:], builder.p_hat[layer2])


def test_feeding_a_layer_hands_the_drafter_slots_ancestors_and_paths():
    builder = TreeBuilder(root_token=3, max_depth=3, device="cpu")
    first = builder.add_layer(torch.tensor([0, 0]), torch.tensor([5, 9]), torch.tensor([0.6, 0.4]), torch.tensor([0, 1]))
    layer = builder.feed(first)
    assert layer.first_slot == 0 and layer.depth == 1 and layer.parent_slots.tolist() == [-1, -1]
    assert layer.paths.tolist() == [[5], [9]] and layer.ancestors.shape == (2, 0)
    second = builder.add_layer(torch.tensor([first[1], first[0]]), torch.tensor([4, 6]), torch.tensor([0.5, 0.5]),
                               torch.tensor([0, 0]))
    layer = builder.feed(second)
    assert layer.first_slot == 2 and layer.parent_slots.tolist() == [1, 0]
    assert layer.ancestors.tolist() == [[False, True], [True, False]]
    assert layer.paths.tolist() == [[9, 4], [5, 6]]
    assert layer.positions(10).tolist() == [12, 12]
    allowed = layer.attention(committed=4)  # (2, 4 committed + 2 fed + 2 new)
    assert allowed.tolist() == [[True] * 4 + [False, True] + [True, False], [True] * 4 + [True, False] + [False, True]]
    tree = builder.whole_tree()
    assert tree.slots.tolist() == [-1, 0, 1, 2, 3]  # the root is never a slot; nodes keep theirs


class _TwoPerLayer(GrowthRule):
    def add_layer(self, tree, frontier, probs):
        return tree.add_best(frontier, probs, per_node=2, budget=2)


def test_grow_drafts_one_forward_per_layer_and_none_for_the_last_layer():
    drafter = ScriptedDrafter(vocab_size=5, salt="g")
    tree = grow(drafter, 0, _TwoPerLayer(), 4, "cpu")
    assert drafter.calls == 4 and tree.max_depth == 4 and tree.n_nodes == 9  # root + 2 per layer
    assert (tree.slots[tree.depth == 4] == -1).all()  # the last layer is never fed
    drafter = ScriptedDrafter(vocab_size=5, salt="g")
    root = grow(drafter, 11, _TwoPerLayer(), 0, "cpu")
    assert drafter.calls == 0 and root.n_nodes == 1 and root.tokens.tolist() == [11]
