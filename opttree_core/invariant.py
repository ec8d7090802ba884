"""Row-count-invariant kernels: a decoding row's numbers do not depend on what else is in its batch.

Tree verification scores n + 1 rows in one forward; sequential decoding scores one. Greedy tree
decoding equals plain greedy decoding only if every row gets the same logits either way. In
float32 the kernels' row-count-dependent rounding practically never flips an argmax; in bfloat16
it does: with the Qwen2.5-Coder pair on a 2-core Zen 4, OPT-Tree's tokens left plain greedy's
after 22-25 tokens on every one of the first prompts tried. Two ops depend on the row count:

- a GEMM: its blocking, and so its summation order, depends on how many rows it multiplies
  (measured: 1536 × 8960 in bf16, 12 of 16 rows differ from the same rows multiplied one by one).
  With the row count fixed, a row's result depends on nothing but that row (measured: bit-equal at
  every position of a 16-row product). So ``invariant_linear`` multiplies every input of up to
  ``MAX_ROWS`` rows in blocks of exactly ``BLOCK`` rows (the last padded with zeros);
- attention over a tree: a node sees the prefix and its ancestors among masked siblings, a
  sequential step sees the same keys contiguous. ``invariant_attention`` gathers each query row's
  visible keys and values into a contiguous block and attends to them alone, so a tree node and the
  sequential step at its position compute the same products of the same shapes. The rows that see
  as many keys (a tree's nodes at one depth) attend in one batched call of SDPA, which computes each
  row as it would alone (measured: bit-equal at batches of 1-16, 7-1100 keys, bf16 and fp32;
  ``tests/test_qwen2.py`` checks it at the 1.5B target's shapes wherever it runs); the query heads
  that share a KV head attend as the rows of one product, so each key is read once per row, not
  once per query head. A tree pays one call per depth, not one per node: on the 2-core Xeon a
  16-node tree of five depths took 204 ms to verify, against 239 ms with the row-by-row attention it
  replaced (one process, fastest of 7). The gathered keys go into a buffer each thread keeps
  (``_workspace``): after a 741-token prompt that tree took 230 ms, against 258 ms when every layer
  allocated its own and the heads were expanded to the query heads' count (one process, fastest of 7).

A forward over an empty cache (a prefill, or a model called without one) takes the stock kernels at
any row count: no row of it is compared with a row of another forward, and every consumer prefills a
prompt the same way, in one forward (``verify.prefill_target``, ``model.generate``). A 128-token
prompt's prefill took 0.33 s so, against 1.00 s in blocks (the 1.5B, Xeon). Other inputs of more than
``MAX_ROWS`` rows take them too; inside ``verification()`` (``verify.score_tree`` scores every tree in
it) any row count is computed in blocks, so a tree of 500 nodes is exact too; it costs one
``BLOCK``-row product per 16 rows. Every consumer of a model with these kernels (tree decoding, the
autoregressive baseline, ``model.generate``) uses them alike, so a speedup stays a fair ratio; what
the guarantee costs is measured per machine (``benchmarks/bench_invariant.py``): a 1-row product now
costs a ``BLOCK``-row one.

Each ``InvariantLinear`` keeps its weight reordered once into oneDNN's blocked layout
(``pack_weight``), which ``F.linear`` otherwise redoes on every call: the same kernel, so the same
numbers (bit-equal at 16, 128 and 700 rows on the machine measured; ``tests/test_qwen2.py`` checks it
wherever it runs), in less time. On a 2-core Xeon with AMX one 16-row block of the 1.5B target's MLP
took 1.17 ms unpacked and 0.78 packed, and a whole forward of the 1.5B (``benchmarks/bench_costs.py
--target qwen2.5-coder-1.5b``, fastest of 7) 171 ms against 227 at 1 row, 201 against 256 at 16
(stock kernels: 215 and 229 ms).
Inputs taking the stock kernels (prefills) go through the packed weight too, so after packing the
original weight is not read again: loaded from the model cache it stays a clean memory-mapped file
the system may evict, and what packing adds is the packed copy, 3.1 GB for Qwen2.5-Coder-1.5B in
bfloat16. Where oneDNN cannot pack (no mkldnn build, a GPU tensor, a dtype its CPU kernels lack) the
product is ``F.linear``'s, as before.
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

BLOCK = 16  # rows per product: a tree of up to BLOCK - 1 nodes (and its root) is one product
MAX_ROWS = 128  # outside a verification, inputs of up to this many rows are computed in blocks; more as they are
ATTENTION = "opttree_invariant"
KEEP_BYTES = 256 << 20  # the most gathered-key workspace a thread keeps between forwards
_VERIFYING: ContextVar[bool] = ContextVar("opttree_invariant_verifying", default=False)
_PREFILLING: ContextVar[bool] = ContextVar("opttree_invariant_prefilling", default=False)  # see _watch_prefills


@contextmanager
def verification():
    """Within it, the invariant kernels compute a forward of any row count in blocks: a tree
    verification is exact at every size, not only up to ``MAX_ROWS`` rows."""
    token = _VERIFYING.set(True)
    try:
        yield
    finally:
        _VERIFYING.reset(token)


def _in_blocks(rows: int) -> bool:
    """Whether an input of ``rows`` rows takes the invariant path (see the module docstring)."""
    return rows >= 1 and (_VERIFYING.get() or (rows <= MAX_ROWS and not _PREFILLING.get()))


def _note_prefill(decoder, args, kwargs) -> None:
    """Before a decoder's forward: whether it runs over an empty cache (a prefill, or no cache at all)."""
    cache = kwargs.get("past_key_values")
    _PREFILLING.set(cache is None or cache.get_seq_length() == 0)


def _end_prefill(decoder, args, kwargs, output) -> None:
    _PREFILLING.set(False)


def _watch_prefills(model: nn.Module, on: bool) -> None:
    """Hook ``model``'s decoder (``get_decoder``) so that its forwards over an empty cache take the
    stock kernels (``on``), or remove the hooks."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None:
        return
    for hooks, hook in ((decoder._forward_pre_hooks, _note_prefill), (decoder._forward_hooks, _end_prefill)):
        for key in [key for key, value in hooks.items() if value is hook]:
            del hooks[key]
    if on:
        decoder.register_forward_pre_hook(_note_prefill, with_kwargs=True)
        decoder.register_forward_hook(_end_prefill, with_kwargs=True, always_call=True)  # after an error too


def pack_weight(weight: torch.Tensor) -> torch.Tensor | None:
    """``weight`` (N, K) reordered into oneDNN's layout for ``BLOCK``-row products, or None where
    oneDNN cannot (no mkldnn build, not a CPU tensor, a dtype or CPU its kernels lack)."""
    if weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), BLOCK)
    except RuntimeError:
        return None


def packed_product(packed: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor | None):
    """A 2-D input's product: through the packed weight when there is one, else ``F.linear``."""
    if packed is None:
        return lambda block: F.linear(block, weight, bias)
    return lambda block: torch.ops.mkldnn._linear_pointwise(block, packed, bias, "none", [], "")


def invariant_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     packed: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` whose every row is computed in a product of exactly ``BLOCK`` rows (through
    ``packed``, ``pack_weight(weight)``, when given)."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    wants_grad = x.requires_grad or weight.requires_grad  # oneDNN's packed product has no backward
    product = packed_product(None if wants_grad else packed, weight, bias)
    flat = x.reshape(rows, x.shape[-1])
    if not _in_blocks(rows):
        return product(flat).reshape(*x.shape[:-1], -1)
    padded = torch.zeros(-(-rows // BLOCK) * BLOCK, flat.shape[1], dtype=flat.dtype, device=flat.device)
    padded[:rows] = flat
    out = torch.cat([product(block) for block in padded.split(BLOCK)])[:rows]
    return out.reshape(*x.shape[:-1], out.shape[-1])


_PACKED_STATE = ("_packed", "_packed_from")  # what ``PacksWeight.pack`` sets on a module


class PacksWeight:
    """A module whose weight (the attribute ``packs`` names) is packed once for oneDNN (``pack``), and
    packed again if the tensor is replaced or changed in place (``packed_weight``); ``packing`` off:
    no packed weight. Copies and pickles leave the packed weight out (oneDNN's layout is opaque to
    them); a copy packs its own on first use."""

    packs = "weight"
    packing = True

    def _stamp(self) -> tuple:
        weight = getattr(self, self.packs)
        return weight.data_ptr(), weight.dtype, weight.device, weight._version

    def pack(self) -> None:
        self._packed = pack_weight(getattr(self, self.packs)) if self.packing else None
        self._packed_from = self._stamp()

    def packed_weight(self) -> torch.Tensor | None:
        if getattr(self, "_packed_from", None) != self._stamp():
            self.pack()
        return self._packed

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        for name in _PACKED_STATE:
            state.pop(name, None)
        return state


class InvariantLinear(PacksWeight, nn.Linear):
    """An ``nn.Linear`` that computes through ``invariant_linear``, with its weight packed once
    (``PacksWeight``). ``packing`` off (``use_invariant_kernels(packed=False)``): every block through
    ``F.linear``, as before packing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return invariant_linear(x, self.weight, self.bias, self.packed_weight())


def _allowed(mask: torch.Tensor | None, q_len: int, kv_len: int, device) -> torch.Tensor:
    """(q, kv) bool: which keys each query row sees (None: causal after the cache)."""
    if mask is None:
        return torch.arange(kv_len, device=device)[None] <= torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
    mask = mask[0, 0]  # (q, kv): one mask for the batch of 1 and every head
    return mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2


_LAST_GROUPS: list = [None]  # (mask, shape, groups) of the forward in progress: its layers share one mask
_WORKSPACE = threading.local()  # each thread's buffer for the keys and values its rows attend to


def _rows_by_key_count(module, mask: torch.Tensor | None, q_len: int, kv_len: int, device):
    """(shared, [(rows, tail)], back): ``shared``, how many leading keys every query row sees (the
    cache before this forward, at least); for each number of visible keys, the query rows that see
    that many (B,) and the keys each sees past ``shared``, in cache order, flattened (B · t,); ``back``
    puts the groups' rows, in turn, back in query order. A tree's nodes at one depth see as many keys,
    so a tree has one group per depth. Computed at a forward's first layer (``layer_idx`` 0, or no
    module) and reused by its other layers, which get the same mask."""
    shape = (q_len, kv_len, device)
    last = _LAST_GROUPS[0]  # one read: another thread's forward may replace it meanwhile
    if getattr(module, "layer_idx", 0) != 0 and last is not None and last[0] is mask and last[1] == shape:
        return last[2]
    allowed = _allowed(mask, q_len, kv_len, device)
    shared = int(allowed.all(0).int().cumprod(0).sum())  # keys 0 .. shared - 1 are seen by every row
    counts = allowed.sum(1)  # (q,)
    groups = []
    for count in counts.unique().tolist():
        rows = (counts == count).nonzero().squeeze(1)
        groups.append((rows, allowed[rows, shared:].nonzero()[:, 1] + shared))
    grouped = (shared, groups, torch.cat([rows for rows, _ in groups]).argsort())
    _LAST_GROUPS[0] = (mask, shape, grouped)
    return grouped


def _workspace(like: torch.Tensor, elements: int) -> torch.Tensor:
    """This thread's buffer of at least ``elements`` of ``like``'s dtype and device, kept from one
    layer and forward to the next (up to ``KEEP_BYTES``; a larger one is made for the call): the
    gathered keys of a long prompt are megabytes a layer, and allocating that much afresh in every
    layer cost more than copying into it (a 16-node tree after 760 tokens, 1.5B target's shapes:
    3.6 ms a layer against 1.8)."""
    if elements * like.element_size() > KEEP_BYTES:
        return like.new_empty(elements)
    buffer = getattr(_WORKSPACE, "buffer", None)
    if buffer is None or buffer.numel() < elements or buffer.dtype != like.dtype or buffer.device != like.device:
        with torch.inference_mode(False):  # a normal tensor: written inside inference mode and out of it
            buffer = like.new_empty(max(elements, 2 * (0 if buffer is None else buffer.numel())))
        _WORKSPACE.buffer = buffer
    return buffer


def _visible(source: torch.Tensor, shared: int, tail: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` (B, H_kv, L, d) filled with each row's visible keys (or values) of ``source`` (1, H_kv,
    kv, d), contiguous: the ``shared`` leading ones, then the row's ``tail`` (B · (L - shared),)."""
    rows, kv_heads, _, dim = out.shape
    out[:, :, :shared] = source[:, :, :shared]
    out[:, :, shared:] = source[0].index_select(1, tail).view(kv_heads, rows, -1, dim).transpose(0, 1)
    return out


def invariant_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Attention of each query row over its own visible keys, gathered contiguous; the rows that see
    as many keys attend in one batched call, each as it would alone.

    query (1, H, q, d), key and value (1, H_kv, kv, d) with the cache; returns (1, q, H, d)."""
    batch, heads, q_len, dim = query.shape
    if batch != 1 or not _in_blocks(q_len):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    kv_heads = key.shape[1]
    queries = query[0].transpose(0, 1)  # (q, H, d)
    shared, groups, back = _rows_by_key_count(module, attention_mask, q_len, key.shape[2], query.device)
    shapes = [(len(rows), kv_heads, shared + len(tail) // len(rows), dim) for rows, tail in groups]
    sizes = [math.prod(shape) for shape in shapes]
    space, start, outputs = _workspace(key, 2 * sum(sizes)), 0, []
    for (rows, tail), shape, size in zip(groups, shapes, sizes):
        keys = _visible(key, shared, tail, space[start : start + size].view(shape))  # (B, H_kv, L, d)
        values = _visible(value, shared, tail, space[start + size : start + 2 * size].view(shape))
        start += 2 * size
        grouped = queries.index_select(0, rows).view(len(rows), kv_heads, -1, dim)  # (B, H_kv, H / H_kv, d)
        outputs.append(F.scaled_dot_product_attention(grouped, keys, values, scale=scaling))  # (B, H_kv, H / H_kv, d)
    if len(outputs) == 1:
        return outputs[0].view(1, q_len, heads, dim), None
    return torch.cat(outputs).index_select(0, back).view(1, q_len, heads, dim), None  # back in query order


AttentionInterface.register(ATTENTION, invariant_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def use_invariant_kernels(model: nn.Module, on: bool = True, packed: bool = True) -> int:
    """Give ``model`` the row-count-invariant kernels in place, their weights packed for oneDNN unless
    ``packed`` is off (``on=False``: back to stock ``nn.Linear`` and SDPA). Returns how many linear
    layers changed."""
    before, after = (nn.Linear, InvariantLinear) if on else (InvariantLinear, nn.Linear)
    changed = 0
    for module in model.modules():
        if type(module) is before:
            module.__class__ = after
            changed += 1
            for name in _PACKED_STATE + ("packing",) if not on else ():
                module.__dict__.pop(name, None)
        if type(module) is InvariantLinear:
            module.packing = packed
            module.pack()
    _watch_prefills(model, on)
    config = getattr(model, "config", None)
    if config is not None:
        config._attn_implementation = ATTENTION if on else "sdpa"
        for sub in ("text_config",):
            if getattr(config, sub, None) is not None:
                getattr(config, sub)._attn_implementation = config._attn_implementation
    return changed


def uses_invariant_kernels(model: nn.Module) -> bool:
    return invariant_kernels(model) is not None


def invariant_kernels(model: nn.Module) -> str | None:
    """What a profile of ``model`` depends on: None (stock kernels), "blocks of 16" or "blocks of 16,
    packed" (its weights packed for oneDNN), each with its attention ("attention by depth, heads as
    rows": rows seeing as many keys attend in one call, the query heads sharing a KV head as the rows
    of one product; profiles measured before either are measured again)."""
    layers = [m for m in model.modules() if type(m) is InvariantLinear]
    if not layers:
        return None
    packed = all(getattr(m, "_packed", None) is not None for m in layers)
    return f"blocks of {BLOCK}" + (", packed" if packed else "") + ", attention by depth, heads as rows"
