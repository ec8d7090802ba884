"""A training-free drafter: prompt lookup (n-gram matching) that returns real distributions.

Prompt-lookup decoding (Saxena's ``prompt-lookup-decoding``, HF's ``prompt_lookup_num_tokens``)
copies what followed an earlier occurrence of the context's last few tokens. Here the same
lookup yields a distribution q over the vocabulary, so OPT-Tree can score p̂ = Π q.

Context of a node: the committed sequence (prompt + every committed token; its last token
is the root) followed by the node's path tokens (root excluded).

Distribution of the next token, for a context c of length L (β = ``backoff``, ε = ``floor``):

    C_n(x)  = #{ i : c[i-n:i] == c[L-n:L] and c[i] = x,  n <= i <= L-1 }
              (earlier occurrences of the length-n suffix, counted by the token that followed)
    n*      = the largest n in [min_n, max_n] with Σ_x C_n(x) > 0
    P_n     = C_n / Σ_x C_n(x)                         (maximum-likelihood next-token counts)
    w_n     = (1 - β) β^(n* - n)  for min_n < n <= n*,   w_min_n = β^(n* - min_n)
    q_match = Σ_{n = min_n..n*} w_n P_n                 (weights sum to 1; β = 0: order n* only)
    q       = (1 - ε) q_match + ε / V

Every suffix of a matching suffix matches too, so all orders below n* have counts. The floor
ε / V keeps q > 0 for every token: a drafted token never gets p̂ exactly 0, so p̂ still ranks
nodes drafted below a weak lookup (ε = 0 is allowed and gives exact zeros). When no order
matches, q is uniform (1 / V): a real distribution whose top-n sum is n / V, so OPT-Tree's
δ rule stops growing after one layer.

Efficiency: for every n in [min_n, max_n] an index (n-gram tuple → Counter of next tokens)
over the committed sequence, updated incrementally in ``start`` and ``commit``. Occurrences
that involve a node's path tokens (next token inside the path) are found by scanning the short
tail ``committed[-max_n:] + path`` per node.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from ..checks import check_int, check_real
from ..errors import OptTreeError
from ..syncs import NGRAM_READ, host_read, to_device
from ..tree import TreeLayer


@dataclass(frozen=True)
class NGramConfig:
    """max_n / min_n: the longest and shortest suffix looked up. backoff: β, the weight passed
    from each matching order to the next shorter one. floor: ε, the probability mass spread
    uniformly over the vocabulary (see the module docstring for the exact formula)."""

    max_n: int = 4
    min_n: int = 1
    backoff: float = 0.1
    floor: float = 1e-3

    def __post_init__(self):
        check_int(self.min_n, "min_n")
        check_int(self.max_n, "max_n (>= min_n)", self.min_n)
        check_real(self.backoff, "backoff beta", 0, 1, open_high=True)
        check_real(self.floor, "floor epsilon", 0, 1, open_high=True)


class NGramDrafter:
    """Prompt-lookup drafter (the Drafter protocol); needs only the vocabulary size, so it
    works with any target model."""

    name = "ngram"

    def __init__(self, vocab_size: int, config: NGramConfig = NGramConfig(), device="cpu"):
        check_int(vocab_size, "vocab_size")
        self.vocab_size, self.config, self.device = vocab_size, config, torch.device(device)
        self.seq: list[int] | None = None  # committed tokens; None before start()
        self.index: dict[int, dict[tuple[int, ...], Counter]] = {}

    def start(self, prompt_ids, features: torch.Tensor | None = None) -> None:
        """Index the prompt. ``features`` (the target's hidden states) are not used."""
        tokens = self._checked(torch.as_tensor(prompt_ids).flatten().tolist())
        if not tokens:
            raise OptTreeError("NGramDrafter.start needs at least one prompt token")
        self.seq = []
        self.index = {n: {} for n in range(self.config.min_n, self.config.max_n + 1)}
        self._append(tokens)

    def commit(self, tokens: list[int], features: torch.Tensor | None = None, accepted_slots=()) -> None:
        self._require_started()
        self._append(self._checked([int(t) for t in tokens]))

    def root_probs(self) -> torch.Tensor:
        self._require_started()
        return self._dense([self.next_token_weights([])])[0]  # (V,)

    def expand(self, layer: TreeLayer) -> torch.Tensor:
        self._require_started()
        with host_read(NGRAM_READ, layer.device):  # the lookup table is on the host: one read a layer
            paths = layer.paths.tolist()
        return self._dense([self.next_token_weights(path) for path in paths])  # (m, V)

    def next_token_weights(self, path: list[int]) -> dict[int, float] | None:
        """q_match below the committed sequence + ``path`` as {token: weight}, or None when
        no order matches (the caller then uses the uniform distribution)."""
        tail = self.seq[-self.config.max_n:] + path
        offset = len(tail) - len(path)  # index in ``tail`` of the first path token
        top = min(self.config.max_n, len(self.seq) + len(path))
        beta, weights, n_star = float(self.config.backoff), {}, None
        for n in range(top, self.config.min_n - 1, -1):  # below n*, every order matches too
            counts = self._order_counts(n, tail, offset)
            if not counts:
                continue
            if n_star is None:
                n_star = n
            w = beta ** (n_star - n) * (1.0 if n == self.config.min_n else 1.0 - beta)
            if w == 0.0:
                break
            total = sum(counts.values())
            for token, c in counts.items():
                weights[token] = weights.get(token, 0.0) + w * c / total
        return weights if n_star is not None else None

    def _order_counts(self, n: int, tail: list[int], offset: int) -> Counter:
        """C_n: next-token counts of earlier occurrences of the context's length-n suffix."""
        key = tuple(tail[-n:])
        extra = [tail[j] for j in range(max(offset, n), len(tail))  # next token inside the path
                 if tail[j - 1] == key[-1] and tuple(tail[j - n : j]) == key]
        counts = self.index[n].get(key, Counter())
        return counts + Counter(extra) if extra else counts  # never mutate the index

    def _dense(self, rows: list[dict[int, float] | None]) -> torch.Tensor:
        """(len(rows), V) float32 on ``self.device``: q = (1 - ε) q_match + ε / V, or uniform."""
        eps, v = float(self.config.floor), self.vocab_size
        out = torch.full((len(rows), v), eps / v, dtype=torch.float32, device=self.device)  # (m, V)
        r, c, w = [], [], []
        for i, row in enumerate(rows):
            if row is None:
                out[i] = 1.0 / v
                continue
            r += [i] * len(row)
            c += list(row)
            w += [(1.0 - eps) * x for x in row.values()]
        if r:
            idx = (to_device(r, self.device), to_device(c, self.device))  # distinct (row, token) pairs
            out.index_put_(idx, out[idx] + to_device(w, self.device, torch.float32))  # no sorting scatter-add
        return out

    def _checked(self, tokens: list[int]) -> list[int]:
        bad = [t for t in tokens if not 0 <= t < self.vocab_size]
        if bad:
            raise OptTreeError(f"token id {bad[0]} is outside the drafter's vocabulary of {self.vocab_size}")
        return tokens

    def _append(self, tokens: list[int]) -> None:
        """Extend the committed sequence and every order's index (tokens already checked)."""
        seq = self.seq
        for token in tokens:
            j = len(seq)  # position of the new token: it follows seq[j - n : j]
            for n, table in self.index.items():
                if j >= n:
                    table.setdefault(tuple(seq[j - n : j]), Counter())[token] += 1
            seq.append(token)

    def _require_started(self) -> None:
        if self.seq is None:
            raise OptTreeError("NGramDrafter used before start(prompt_ids)")
