"""DraftTree and TreeBuilder: structure, ancestor masks, positions by depth."""
import torch

from opttree_core.tree import DraftTree, TreeBuilder, expand_layer

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


def test_positions_follow_depth_not_index():
    tree = DraftTree.from_paths(3, PATHS)
    assert tree.position_ids(100).tolist() == [100 + d for d in tree.depth.tolist()]


def test_layerwise_expansion_keeps_p_hat_products_and_parent_order():
    builder = TreeBuilder(root_token=0, capacity=20, max_depth=3, device="cpu")
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
    builder = TreeBuilder(root_token=0, capacity=10, max_depth=3, device="cpu")
    layer1 = expand_layer(builder, builder.layers[0], torch.tensor([[1.0, 0.0]]), per_node=1, layer_budget=1)
    layer2 = expand_layer(builder, layer1, torch.tensor([[1.0, 0.0]]), per_node=1, layer_budget=1)
    assert builder.p_hat[layer2].item() == builder.p_hat[layer1].item() == 1.0
    assert builder.ranking().tolist() == [layer1.item(), layer2.item()]


def test_subtree_reindexes_parents():
    builder = TreeBuilder(root_token=0, capacity=10, max_depth=2, device="cpu")
    layer1 = expand_layer(builder, builder.layers[0], torch.tensor([[0.2, 0.5, 0.3]]), per_node=3, layer_budget=3)
    layer2 = expand_layer(builder, layer1[:1], torch.tensor([[0.9, 0.1, 0.0]]), per_node=1, layer_budget=1)
    tree = builder.subtree(torch.cat([layer1[:1], layer2]))
    assert tree.tokens.tolist() == [0, 1, 0]
    assert tree.parents.tolist() == [-1, 0, 1]
