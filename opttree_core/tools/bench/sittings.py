"""A bench run that goes on in sittings, perhaps on another machine each time.

Every progress row names the machine that measured it (``records.MACHINE_COLUMN``), and each
speedup is a prompt's method over AR on the same prompt, so a prompt must run whole on one machine:
a prompt part-run on another machine (or on an unnamed one, from before rows named theirs) is set
aside when the run resumes, and runs again whole here. Its rows are appended to ``superseded.jsonl``
and its tree logs moved under ``superseded/``, so nothing measured is lost.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from ...atomic import write_atomic
from ...records import MACHINE_COLUMN


def part_run_elsewhere(records: dict, prompt_ids: list[str], n_methods: int, machine: str) -> list[str]:
    """The prompts with some but not all of their ``n_methods`` pairs finished, one of them on
    another machine than ``machine``."""
    done: dict[str, list[dict]] = {}
    for (prompt_id, _), record in records.items():
        done.setdefault(prompt_id, []).append(record["row"])
    return [p for p in prompt_ids if 0 < len(done.get(p, [])) < n_methods
            and any(row.get(MACHINE_COLUMN) != machine for row in done[p])]


def set_aside(out_dir: Path, records: dict, prompt_ids: list[str], machine: str) -> dict:
    """Move the finished pairs of ``prompt_ids`` out of the run (rows to superseded.jsonl, logs under
    superseded/, then progress.jsonl rewritten without them); returns the records left."""
    if not prompt_ids:
        return records
    gone = {key: r for key, r in records.items() if key[0] in prompt_ids}
    kept = {key: r for key, r in records.items() if key[0] not in prompt_ids}
    with open(out_dir / "superseded.jsonl", "a") as f:
        f.writelines(json.dumps(record) + "\n" for record in gone.values())
        f.flush()
        os.fsync(f.fileno())
    for record in gone.values():
        _move_log(out_dir, record["row"].get("log_dir"))
    write_atomic(out_dir / "progress.jsonl",
                 lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in kept.values()), encoding="utf-8"))
    machines = sorted({str(r["row"].get(MACHINE_COLUMN)) for r in gone.values()})
    print(f"bench: {', '.join(prompt_ids)} part-run on another machine ({'; '.join(machines)}): its {len(gone)} "
          f"pairs are set aside in superseded.jsonl, and it runs again whole on this one ({machine})", file=sys.stderr)
    return kept


def _move_log(out_dir: Path, log_dir: str | None) -> None:
    source = out_dir / log_dir if log_dir else None
    if source is None or not source.exists():
        return
    target, n = out_dir / "superseded" / log_dir, 1
    while target.exists():
        n += 1
        target = out_dir / "superseded" / f"{log_dir}.{n}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, target)
