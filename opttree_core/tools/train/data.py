"""Self-distillation data: the target's own greedy answers, and its features on them.

A *sequence* is the chat-formatted prompt followed by the target's greedy response
(ending at EOS or at the length cap). Features are the target's last-layer features
after the final norm, f_j for every position j (so lm_head(f_j) are its logits there);
EAGLE-3 heads also read g_j, the hidden states entering a few decoder layers, concatenated
(``compute_features(..., layers=...)``, cached in a file of their own).
Both are cached on disk, so an interrupted run resumes where it stopped. With ``--ray`` Ray workers make
them in shards (``ray_data.py``) and this process writes the same files.
"""
from __future__ import annotations

import json
import os
import pickle
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from ...atomic import write_atomic
from ...models import LoadedModel
from .cache import check_cache, made_from
from .prompts import Prompt


@dataclass(frozen=True)
class Sequence:
    ids: list[int]  # prompt + response token ids
    n_prompt: int
    source: str


def _encode_chat(tokenizer, text: str) -> list[int]:
    return list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                              tokenize=True, return_dict=False))


def _cut_at_eos(ids: list[int], eos: set[int], pad: int) -> list[int]:
    for i, token in enumerate(ids):
        if token in eos:
            return ids[: i + 1]
    while ids and ids[-1] == pad and pad not in eos:
        ids = ids[:-1]
    return ids


def _eos_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [] if eos is None else [eos])


def _left_padded(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids and attention mask (B, width), each prompt right-aligned."""
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    return ids, mask


@torch.inference_mode()
def _generate_batch(target: LoadedModel, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy responses for a batch of prompts (left padding), each ending at its first EOS or at the cap.

    One forward per token over the rows still running: a row that emits EOS leaves the batch (its
    cache rows are dropped, ``DynamicCache.batch_select_indices``), so a batch costs what its live rows
    cost, where ``model.generate`` keeps computing finished rows until the longest is done. Positions
    and mask are those ``generate`` builds (position = number of real tokens before)."""
    model, device = target.model, target.model.device
    pad = target.tokenizer.pad_token_id if target.tokenizer.pad_token_id is not None else target.tokenizer.eos_token_id
    eos = _eos_ids(model)
    ids, mask = (t.to(device) for t in _left_padded(prompts, pad))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, width)
    cache = DynamicCache(config=model.config)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                   logits_to_keep=1).logits[:, -1]  # (B, V)
    live, responses, last = list(range(len(prompts))), [[] for _ in prompts], positions[:, -1]
    for step in range(max_new_tokens):
        tokens = logits.argmax(-1)  # (live,)
        keep = []
        for index, (row, token) in enumerate(zip(live, tokens.tolist())):
            responses[row].append(token)
            if token not in eos:
                keep.append(index)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(live):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            live, tokens, mask, last = [live[i] for i in keep], tokens[index], mask[index], last[index]
        mask, last = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1), last + 1
        logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=last[:, None], past_key_values=cache,
                       use_cache=True).logits[:, -1]
    return responses


@torch.inference_mode()
def _generate_batch_hf(target: LoadedModel, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """The same with ``model.generate`` (finished rows run to the end), kept to compare against."""
    model, device = target.model, target.model.device
    pad = target.tokenizer.pad_token_id if target.tokenizer.pad_token_id is not None else target.tokenizer.eos_token_id
    ids, mask = _left_padded(prompts, pad)
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=pad)
    eos = _eos_ids(model)
    return [_cut_at_eos(row[ids.shape[1]:].tolist(), eos, pad) for row in out]


def local_answers(target: LoadedModel, asked: list[list[int]], start: int, max_new_tokens: int,
                  batch_size: int) -> Iterator[tuple[range, list[list[int]]]]:
    """(positions, answers) batch by batch for ``asked[start:]`` (prompts in asking order), in this process."""
    for begin in range(start, len(asked), batch_size):
        positions = range(begin, min(begin + batch_size, len(asked)))
        yield positions, _generate_batch(target, [asked[k] for k in positions], max_new_tokens)


def self_distill(target: LoadedModel, prompts: list[Prompt], path: Path, max_new_tokens: int = 128,
                 batch_size: int = 16, progress: bool = True, settings: dict | None = None,
                 workers=None) -> list[Sequence]:
    """The target's greedy answers to ``prompts``, appended to ``path`` (JSON lines) batch by batch.

    Prompts are asked shortest first (similar lengths batch well), in batches of ``batch_size``; prompts
    already answered in ``path`` are skipped, so a second call resumes the first; answers made from
    another target, cap or prompts are refused (``cache.py``; ``settings``: what chose the prompts, recorded).
    ``workers`` (``ray_data.RayData``): the batches are answered by Ray workers in shards; the lines
    written are the same.
    """
    done = load_sequences(path)
    encoded = [_encode_chat(target.tokenizer, p.text) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))  # similar lengths batch well
    asked, record = [encoded[i] for i in order], made_from(target, prompts, max_new_tokens, settings or {})
    check_cache(path, record, done, asked, _eos_ids(target.model))
    path.parent.mkdir(parents=True, exist_ok=True)
    batches = (local_answers(target, asked, len(done), max_new_tokens, batch_size) if workers is None else
               workers.answers(path, record, asked, len(done), max_new_tokens, batch_size))
    bar = tqdm(total=len(prompts), initial=len(done), desc="self-distillation", unit="prompt", disable=not progress)
    with path.open("a") as f:
        for positions, responses in batches:
            for k, response in zip(positions, responses):
                seq = Sequence(asked[k] + response, len(asked[k]), prompts[order[k]].source)
                f.write(json.dumps(asdict(seq)) + "\n")
                done.append(seq)
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(positions))
    bar.close()
    return done


def load_sequences(path: Path) -> list[Sequence]:
    if not path.is_file():
        return []
    sequences = []
    with path.open() as f:
        for line in f:
            if line.endswith("\n"):  # a torn last line (interrupted write) is dropped and redone
                sequences.append(Sequence(**json.loads(line)))
    return sequences


def _cached_features(path: Path, sequences: list[Sequence], columns: int) -> list[torch.Tensor] | None:
    """The features in ``path`` if they fit ``sequences`` (one (len, columns) tensor each), else None."""
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, weights_only=True)  # tensors only: a planted file cannot run code
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        print(f"opttree: the features cache {path} is unreadable ({type(e).__name__}); computing it again",
              file=sys.stderr)
        return None
    fits = (isinstance(cached, list) and len(cached) == len(sequences)
            and all(f.shape == (len(s.ids), columns) for f, s in zip(cached, sequences)))
    return cached if fits else None


def compute_features(target: LoadedModel, sequences: list[Sequence], path: Path, batch_size: int = 8,
                     progress: bool = True, layers: tuple[int, ...] | None = None, workers=None) -> list[torch.Tensor]:
    """f_j for every position of every sequence, fp16, cached in ``path`` (written atomically).

    ``layers`` (EAGLE-3): each row is f_j followed by the hidden states entering these decoder layers
    (HF ``hidden_states[i]``, as ``modelcall.forward`` returns them while decoding), (len, (1 + k) · hidden):
    the teacher's logits come from f, the head reads the rest. A cache of another width is rebuilt.
    ``workers`` (``ray_data.RayData``): computed by Ray workers in shards; the file written is the same."""
    columns = target.model.config.hidden_size * (1 + (len(layers) if layers else 0))
    cached = _cached_features(path, sequences, columns)
    if cached is not None:
        return cached
    if workers is None:
        features = feature_rows(target, sequences, batch_size, layers, progress)
    else:
        features = workers.features(path, sequences, batch_size, layers)
    write_atomic(path, lambda tmp: torch.save(features, tmp))
    if workers is not None:
        workers.forget_shards(path)
    return features


@torch.inference_mode()
def feature_rows(target: LoadedModel, sequences: list[Sequence], batch_size: int, layers: tuple[int, ...] | None,
                 progress: bool = False) -> list[torch.Tensor]:
    """The features of ``sequences`` (``compute_features``), batch by batch, in this process."""
    decoder, device = target.model.get_decoder(), target.model.device
    features = []
    for start in tqdm(range(0, len(sequences), batch_size), desc="features", disable=not progress):
        batch = sequences[start:start + batch_size]
        width = max(len(s.ids) for s in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, : len(seq.ids)] = torch.tensor(seq.ids)  # right padding: causal, so real positions are exact
        if not layers:
            hidden = decoder(input_ids=ids.to(device)).last_hidden_state  # (batch, width, hidden)
        else:
            out = decoder(input_ids=ids.to(device), output_hidden_states=list(layers))
            hidden = torch.cat([out.last_hidden_state, *(out.hidden_states[i] for i in layers)], dim=-1)
            # (batch, width, (1 + k) · hidden)
        features += [hidden[row, : len(seq.ids)].to(torch.float16).cpu() for row, seq in enumerate(batch)]
    return features
