"""The trees of every registered policy × three drafters × n ∈ {4, 16, 50} (greedy, and T = 1 with
top-k and with sampled children) equal the ones recorded before the growth loop was rewritten
(``tests/golden.py``, ``tests/data/golden_trees.json``): the same generated tokens and, at every
step, the same nodes, parents, depths, ranks, target tokens and acceptance, and the same E(A).

Two policies were re-recorded since, each for a change made on purpose: DynaTree after the rewrite
(one depth-1 node, the draft's top-1; τ keeps a node and stops only its expansion, as DynaTree's
paper and code do), and OPT-Tree auto twice: when it learnt to draft nothing for a while after a
step whose best budget was 0 (the n-gram runs, whose lookups often find nothing, change from their
tenth step), and when its stop rule became an expected gain that also picks the frontier's width
(its trees change; its greedy tokens did not, its sampled ones follow other random draws).
OPT-Tree, OPT-Tree auto and DynaTree were re-recorded when they stopped drafting below an
end-of-sequence token (the tiny models' EOS, 2, is drafted now and then): some trees change, no
greedy token does; two sampled runs follow other random draws.
Every other entry is from before the rewrite."""
import json
from pathlib import Path

import pytest

from opttree_core.policies.registry import POLICIES
from golden import differences, tiny_runs

FIXTURE = Path(__file__).parent / "data" / "golden_trees.json"


@pytest.fixture(scope="module")
def recorded():
    return json.loads(FIXTURE.read_text())


def test_the_fixture_covers_every_registered_policy(recorded):
    assert {key.split(" ")[0] for key in recorded} == set(POLICIES)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_trees_and_tokens_equal_the_recorded_ones(recorded, policy):
    now = tiny_runs([policy])
    before = {k: v for k, v in recorded.items() if k.split(" ")[0] == policy}
    assert differences(before, now) == []
