"""``[[published]]`` rows of a bench config: numbers a paper reports for cells of the grid, which
``bench-table`` prints beside the measured ones."""
from __future__ import annotations

from ...errors import OptTreeError

PUBLISHED_KEYS = {"source", "drafter", "policy", "budget", "temperature", "mal", "speedup"}


def published_rows(raw, grid: dict[str, tuple]) -> tuple[dict, ...]:
    """``[[published]]`` tables: a paper's MAL and/or speedup for one cell of the grid (drafter, policy,
    budget, temperature), with its ``source``; bench-table prints them beside the measured cell."""
    if not isinstance(raw, list):
        raise OptTreeError("bench config: 'published' must be [[published]] tables")
    rows = []
    for row in raw:
        unknown = sorted(set(row) - PUBLISHED_KEYS) if isinstance(row, dict) else ["(not a table)"]
        if unknown:
            raise OptTreeError(f"bench config: published key {unknown[0]!r} is unknown: use "
                               f"{', '.join(sorted(PUBLISHED_KEYS))}")
        if not isinstance(row.get("source"), str) or not row["source"].strip():
            raise OptTreeError("bench config: a [[published]] table needs a 'source' (where the numbers are from)")
        cell = {"drafter": row.get("drafter"), "policy": row.get("policy"), "budget": row.get("budget"),
                "temperature": float(row["temperature"]) if isinstance(row.get("temperature"), int | float)
                and not isinstance(row.get("temperature"), bool) else row.get("temperature")}
        for key, value in cell.items():
            if value not in grid[key]:
                raise OptTreeError(f"bench config: published {key} {value!r} is not in the config's {key}s "
                                   f"{list(grid[key])}")
        numbers = {k: row[k] for k in ("mal", "speedup") if k in row}
        if not numbers or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0
                                  for v in numbers.values()):
            raise OptTreeError(f"bench config: published {cell['drafter']}/{cell['policy']} needs 'mal' and/or "
                               f"'speedup' as numbers > 0, got {numbers}")
        rows.append({"source": row["source"], **cell, **{k: float(v) for k, v in numbers.items()}})
    return tuple(rows)
