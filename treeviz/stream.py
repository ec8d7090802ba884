"""The generated text as a token stream: which tokens a draft proposed and the target
accepted, and which the target produced itself (the bonus token of each step).

``token_stream`` returns plain records; ``stream_html`` renders them as HTML, one
``<span class="tv-step">`` per step, each token's hover naming its step and that step's A.
"""
from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass

from . import style
from .logs import token_text, token_text_map

DRAFTED, TARGET = "drafted", "target"


@dataclass(frozen=True)
class StreamToken:
    step: int
    index: int  # position in the generated text
    token: int
    text: str
    source: str  # "drafted": proposed by the draft, accepted by the target; "target": the target's own
    a: int  # A of the step
    ea: float  # E(A) of the step


def step_tokens(data, step: int) -> list[tuple[int, str]]:
    """The (token, source) pairs ``step`` added: the accepted path, then the bonus token (A in all)."""
    nodes = data.nodes[(data.nodes["step"] == step) & data.nodes["accepted"] & (data.nodes["depth"] > 0)]
    path = nodes.sort_values("depth")["token"].astype(int).tolist()
    row = data.steps.iloc[step]
    a = int(row["a"])
    tokens = [(t, DRAFTED) for t in path] + [(int(row["bonus_token"]), TARGET)]
    return tokens[:a]  # a step cut short at EOS adds fewer tokens


def token_stream(data, tokenizer=None, texts: Mapping[int, str] | None = None) -> list[StreamToken]:
    """Every generated token in order, with its step and source."""
    texts = token_text_map(data, tokenizer) if texts is None else texts
    out: list[StreamToken] = []
    for step in range(len(data.steps)):
        a, ea = int(data.steps.iloc[step]["a"]), float(data.steps.iloc[step]["ea"])
        for token, source in step_tokens(data, step):
            out.append(StreamToken(step=step, index=len(out), token=token, text=token_text(token, texts),
                                   source=source, a=a, ea=ea))
    return out


STREAM_CSS = f"""
.tv-stream {{ font-family: 'DejaVu Sans Mono', monospace; font-size: 13px; line-height: 1.9;
             white-space: pre-wrap; word-break: break-word; }}
.tv-step {{ border-bottom: 2px solid #999; margin-right: 1px; padding-bottom: 1px; }}
.tv-step:nth-child(even) {{ border-bottom-color: #DDD; }}
.tv-step.tv-current {{ outline: 2px solid {style.ACCEPTED}; }}
.tv-tok {{ border-radius: 2px; }}
.tv-drafted {{ background: {style.STREAM_BG['drafted']}; }}
.tv-target {{ background: {style.STREAM_BG['target']}; }}
.tv-legend span {{ padding: 0 4px; margin-right: 8px; }}
"""


def _token_span(tok: StreamToken) -> str:
    who = "drafted, accepted by the target" if tok.source == DRAFTED else "produced by the target (bonus token)"
    hover = f"step {tok.step} · A = {tok.a} · E(A) = {tok.ea:.2f}\n{who}\ntoken {tok.token}: {tok.text!r}"
    text = html.escape(tok.text).replace("\n", "↵\n") or "∅"
    return f'<span class="tv-tok tv-{tok.source}" title="{html.escape(hover)}">{text}</span>'


def stream_html(tokens: list[StreamToken], legend: bool = True, css: bool = True, current: int | None = None) -> str:
    """HTML for a token stream (``css=False`` when the page already has ``STREAM_CSS``);
    the step ``current`` is outlined."""
    by_step: dict[int, list[StreamToken]] = {}
    for tok in tokens:
        by_step.setdefault(tok.step, []).append(tok)
    steps = "".join(f'<span class="tv-step{" tv-current" if step == current else ""}" data-step="{step}">'
                    f'{"".join(map(_token_span, toks))}</span>' for step, toks in by_step.items())
    parts = [f"<style>{STREAM_CSS}</style>"] if css else []
    if legend:
        parts.append('<div class="tv-legend"><span class="tv-drafted">drafted &amp; accepted</span>'
                     '<span class="tv-target">produced by the target</span>'
                     '<span>(steps underlined; hover a token for its step and A)</span></div>')
    parts.append(f'<div class="tv-stream">{steps}</div>')
    return "".join(parts)


def log_stream_html(data, tokenizer=None, **options) -> str:
    """The token stream of a log as HTML."""
    return stream_html(token_stream(data, tokenizer), **options)
