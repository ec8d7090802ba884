"""What a self-distillation answers file (``sequences*.jsonl``) was made from, and the check a rerun makes.

Beside each answers file, ``<stem>.made-from.json`` records the target (its spec, a local directory
resolved, and its architecture, ``shipped.target_signature``), ``--max-new-tokens``, the prompts'
count and sha256, and the settings that chose the prompts (``--n-own``, ``--seed`` …; kept to name
the culprit). Answers resume only into a file made from the same target, cap and prompts: anything
else is one line naming what differs (use another ``--data`` directory), and nothing is rebuilt over
them. Bench refuses a changed config on resume the same way (``bench/run.py``).

A file from before the record has none: its lines are checked for what they show (each answer's
prompt tokens are the prompt the rerun asks at that place; answers stop at EOS or at this
``--max-new-tokens``), then it is kept and recorded with one line saying so (the target that made
it cannot be checked from the lines). These line checks run for every file.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from ...atomic import write_atomic
from ...errors import OptTreeError
from ...shipped import target_signature


def record_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.made-from.json")


def made_from(target, prompts, max_new_tokens: int, settings: dict) -> dict:
    """The record of an answers file: target, cap, prompts (count and sha256), then ``settings``."""
    name = target.name if isinstance(target.name, str) else str(target.name)
    if Path(name).is_dir():
        name = str(Path(name).resolve())
    digest = hashlib.sha256(json.dumps([[p.source, p.text] for p in prompts]).encode()).hexdigest()
    return {"target": name, "target_signature": target_signature(target.model.config), "max_new_tokens": max_new_tokens,
            "prompts": len(prompts), "prompts_sha256": digest, "settings": settings}


def _flag(key: str) -> str:
    return f"--{key.replace('_', '-')}"


def _difference(old: dict, new: dict) -> str | None:
    """What in ``new`` differs from the recorded ``old`` that changes the answers, in words; None if nothing."""
    if old.get("target") != new["target"]:
        return f"made with another --target ({old.get('target')})"
    if old.get("target_signature") != new["target_signature"]:
        keys = [k for k in new["target_signature"] if (old.get("target_signature") or {}).get(k)
                != new["target_signature"][k]]
        return f"made by a target of another architecture ({keys[0] if keys else 'target_signature'} differs)"
    if old.get("max_new_tokens") != new["max_new_tokens"]:
        return f"made with --max-new-tokens {old.get('max_new_tokens')} (now {new['max_new_tokens']})"
    if old.get("prompts") != new["prompts"] or old.get("prompts_sha256") != new["prompts_sha256"]:
        before = old.get("settings") if isinstance(old.get("settings"), dict) else {}
        changed = [f"{_flag(k)} {before[k]} (now {v})" for k, v in new["settings"].items()
                   if k in before and before[k] != v]
        why = ", ".join(changed) or "the same settings: the --gsm8k file or the prompt lists changed"
        return f"to other prompts than these ({old.get('prompts')} prompts, now {new['prompts']}; made with {why})"
    return None


def _check_lines(path: Path, done, asked: list[list[int]], max_new_tokens: int, eos: set[int]) -> None:
    """Each cached answer's prompt is the one asked at its place, and it stops at EOS or at the cap."""
    other = f"{path} holds answers to other prompts than these"
    if len(done) > len(asked):
        raise OptTreeError(f"{other} ({len(done)} answers for {len(asked)} prompts): use another --data directory")
    for k, seq in enumerate(done):
        if seq.ids[: seq.n_prompt] != asked[k]:
            raise OptTreeError(f"{other} (answer {k + 1} is to another prompt, or another chat template): "
                               "use another --data directory")
        response = seq.ids[seq.n_prompt:]
        cut = not response or response[-1] not in eos
        if len(response) > max_new_tokens or (cut and len(response) != max_new_tokens):
            ending = "" if cut else " ending in EOS"
            raise OptTreeError(f"{path} holds answers made with another --max-new-tokens (answer {k + 1} has "
                               f"{len(response)} tokens{ending}, this cap is {max_new_tokens}): use another --data "
                               "directory, or rerun with the cap it was made with")


def check_cache(path: Path, record: dict, done, asked: list[list[int]], eos: set[int]) -> None:
    """Refuse ``done`` (the answers in ``path``, in asking order ``asked``) unless they were made from ``record``;
    write the record where there is none yet (a new file, or one from before records, with one line)."""
    where = record_path(path)
    if where.is_file():
        try:
            old = json.loads(where.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise OptTreeError(f"cannot read {where} ({e}), so the answers beside it cannot be trusted: "
                               "use another --data directory") from e
        difference = _difference(old if isinstance(old, dict) else {}, record) if done else None
        if difference is not None:
            raise OptTreeError(f"{path} holds answers {difference}: use another --data directory "
                               "(or rerun with the settings it was made with)")
    _check_lines(path, done, asked, record["max_new_tokens"], eos)
    if where.is_file() and done:
        return
    if done:
        print(f"opttree: {path} has no record of what it was made from (made before caches kept one); its "
              f"{len(done)} answers fit these prompts and --max-new-tokens {record['max_new_tokens']}, so they are "
              f"kept as answers of {record['target']} and recorded; if another target made them, use another "
              "--data directory", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(where, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
