"""The benchmark harness (``run.py``): a TOML config (``config.py``) of drafters × policies ×
budgets × temperatures and peers (``methods.py``) on its datasets' prompts (``prompts.py``), run
interleaved over the same prompts in one process, resumable, summarised with the one metric
definitions (``summary.py``)."""
from .config import BenchConfig, BenchPrompt, load_config, parse_config
from .prompts import load_prompts
from .methods import Method, build_methods
from .run import RunResult, quick_bench, read_progress, results_frame, run_bench
from .summary import category_markdown, machines_markdown, markdown_table, published_of, read_results, summarize, write_summary

__all__ = ["BenchConfig", "BenchPrompt", "Method", "RunResult", "build_methods", "load_config", "load_prompts", "quick_bench",
           "category_markdown", "machines_markdown", "markdown_table", "parse_config", "published_of", "read_progress", "read_results", "results_frame", "run_bench", "summarize",
           "write_summary"]
