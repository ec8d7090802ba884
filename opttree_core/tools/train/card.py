"""The model card written next to trained weights."""
from __future__ import annotations

import json
from pathlib import Path


KINDS = {"eagle": "An EAGLE-1 head", "eagle3": "An EAGLE-3 head", "draft-lm": "A small draft LM"}
TEACHER = {"eagle": "it regresses the target's next feature and matches the target's next-token distribution "
                    "through the target's frozen LM head",
           "eagle3": "it reads the target's features from three layers and is trained on its own unrolled drafts "
                     "(training-time test) with a token-level loss only",
           "draft-lm": "it matches the target's next-token distribution (logit distillation)"}


def _what(kind: str) -> str:
    return KINDS.get(kind, f"A {kind} draft")


def write_card(path: Path, card: dict) -> None:
    data, held = card["data"], card["heldout"]
    lines = [
        f"# {card['name']}",
        "",
        f"{_what(card['kind'])} for `{card['target']}`, trained by self-distillation on the target's own greedy "
        f"answers to training prompts: {TEACHER.get(card['kind'], 'the target is the teacher')}.",
        "",
        "## Data",
        f"- prompts: {data['prompts']} ({', '.join(f'{k} {v}' for k, v in sorted(data['by_source'].items()))})",
        f"- sequences: {data['train_sequences']} for training, {data['heldout_sequences']} held out",
        f"- tokens: {data['prompt_tokens']} prompt + {data['response_tokens']} response",
        "",
        "## Training",
        f"- steps: {card['steps']} of {card.get('planned_steps', card['steps'])} planned; "
        f"config: `{json.dumps(card['train'])}`",
        *([f"- **stopped early**: {card['stopped_early']}"] if "stopped_early" in card else []),
        *([f"- recipe: `{json.dumps(card['recipe'])}`"] if "recipe" in card else []),
        f"- final loss: {card['final_loss']:.4f}" if card["final_loss"] is not None else "- final loss: n/a",
        f"- wall time: {', '.join(f'{k} {v:.0f} s' for k, v in card['wall_time'].items())} on {card['device']}",
        f"- command: `{card['command']}`",
        "",
        "## Held-out results",
        f"- first-step agreement with the target: top-1 {held['top1']:.3f}, top-4 {held['top4']:.3f} "
        f"({held['positions']} positions)",
        "",
        "| epoch | training tokens | top-1 | top-4 | MAL (OPT-Tree defaults) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for p in card["learning_curve"]:
        mal = f"{p['mal']:.2f}" if "mal" in p else "-"
        lines.append(f"| {p['epoch']} | {p['tokens']} | {p['top1']:.3f} | {p['top4']:.3f} | {mal} |")
    path.write_text("\n".join(lines) + "\n")
