"""The explorers' controls (ipywidgets, used by ``widgets.py``): a policy with its node budget n and
one typed control per other parameter of its config, and the prompt and decoding settings with
the Run button. ``run_safely`` turns an engine error into the status line."""
from __future__ import annotations

import html
import json

import ipywidgets as widgets

from opttree_core.errors import OptTreeError

from .rerun import RunRequest, budget_keys, budget_params, parse_param, policy_fields, policy_names

WIDE = {"description_width": "initial"}  # descriptions in full, never cut off


def _param_control(key: str, kind, value) -> widgets.Widget:
    """A control for one policy parameter, typed from its config: numbers and booleans get their own
    controls; anything else (optional values, tuples, paths) a text box read by the registry."""
    if kind is bool:
        return widgets.Checkbox(value=bool(value), description=key, indent=False, style=WIDE)
    if kind is int:
        return widgets.IntText(value=int(value), description=key, style=WIDE)
    if kind is float:
        return widgets.FloatText(value=float(value), step=0.01, description=key, style=WIDE)
    return widgets.Text(value=_as_text(value), description=key, style=WIDE, layout=widgets.Layout(width="420px"))


def _as_text(value) -> str:
    """How a text control shows a parameter value: JSON, "none" for None (what the registry parses)."""
    return "none" if value is None else value if isinstance(value, str) else json.dumps(
        list(value) if isinstance(value, tuple) else value)


class PolicyControls:
    """The policy dropdown (every policy in ``opttree_core.policies.registry.POLICIES``), the node
    budget n, and one control per other parameter of the chosen policy's config. n sets what the
    policy's ``for_budget(n)`` sets (``registry.budget_keys``: a policy's ``nodes`` is not a second
    control); the other parameters keep what was typed into them, across a change of n and across a
    change of policy for the parameters both policies have (the note under the controls says which
    were kept and which took the new policy's defaults)."""

    def __init__(self, policy: str = "opt-tree", nodes: int = 16, params: dict | None = None,
                 nodes_control: widgets.BoundedIntText | None = None):
        """``nodes_control``: an n shared with other controls (CompareExplorer: equal n on both sides),
        shown by its owner, not in ``box()``."""
        names = policy_names()
        self.policy = widgets.Dropdown(options=names, value=policy if policy in names else names[0],
                                       description="policy", style=WIDE)
        self.shared = nodes_control is not None
        self.nodes = nodes_control or budget_control(nodes)
        self.params = widgets.VBox()
        self.note = widgets.HTML()
        self.fields: dict[str, widgets.Widget] = {}
        self.policy.observe(self._policy_changed, names="value")
        self._rebuild(params or {})

    def _rebuild(self, overrides: dict | None = None) -> None:
        name, kinds = self.policy.value, policy_fields(self.policy.value)
        values = {**budget_params(name, self.nodes.value), **{k: v for k, v in (overrides or {}).items() if k in kinds}}
        shown = [key for key in kinds if key not in budget_keys(name)]
        self.fields = {key: _param_control(key, kinds[key], values[key]) for key in shown}
        self.params.children = list(self.fields.values())
        self.note.value = f"<small>n sets {', '.join(budget_keys(name)) or 'nothing else'} for {html.escape(name)}</small>"

    def _policy_changed(self, change) -> None:
        """Keep the values typed into the old policy's controls (those off its defaults) that the new
        policy has too; the rest take the new policy's defaults. The note says which."""
        kept, defaults = {}, budget_params(change["old"], self.nodes.value)
        for key, control in self.fields.items():
            if key in policy_fields(change["new"]) and key not in budget_keys(change["new"]):
                try:
                    value = self._typed(change["old"], key, control)
                except OptTreeError:  # an unreadable text: the new policy's default instead
                    continue
                if value != defaults[key]:
                    kept[key] = value
        self._rebuild(kept)
        reset = [key for key in self.fields if key not in kept]
        self.note.value += ("<br><small>kept from " + html.escape(change["old"]) + ": "
                            + (", ".join(f"{k} = {html.escape(_as_text(v))}" for k, v in kept.items()) or "nothing")
                            + (f"; {html.escape(change['new'])}'s defaults: {', '.join(reset)}" if reset else "")
                            + "</small>")

    @staticmethod
    def _typed(name: str, key: str, control: widgets.Widget):
        return parse_param(name, key, control.value) if isinstance(control, widgets.Text) else control.value

    def field(self, key: str) -> widgets.Widget:
        """The control of parameter ``key`` of the chosen policy (not one that n sets)."""
        return self.fields[key]

    def values(self) -> dict:
        """``policy`` and its ``params``, typed (a text that is not a valid value is an OptTreeError):
        what n sets, then every other control."""
        name = self.policy.value
        params = {**{key: value for key, value in budget_params(name, self.nodes.value).items()
                     if key in budget_keys(name)},
                  **{key: self._typed(name, key, c) for key, c in self.fields.items()}}
        return {"policy": name, "params": {key: params[key] for key in policy_fields(name)}}

    def box(self) -> widgets.Widget:
        return widgets.VBox([self.policy, *([] if self.shared else [self.nodes]), self.note, self.params])


class DecodeControls:
    """Prompt, temperature, max new tokens, chat, live and the Run button."""

    def __init__(self, prompt: str = "", max_new_tokens: int = 32, chat: bool = False, live: bool = True):
        self.prompt = widgets.Textarea(value=prompt, description="prompt", style=WIDE,
                                       layout=widgets.Layout(width="480px"))
        self.temperature = widgets.FloatSlider(value=0.0, min=0.0, max=2.0, step=0.05, description="temperature",
                                               style=WIDE)
        self.max_new_tokens = widgets.IntSlider(value=max_new_tokens, min=1, max=512, description="new tokens",
                                                style=WIDE)
        self.chat = widgets.Checkbox(value=chat, description="chat template", indent=False, style=WIDE)
        self.live = widgets.Checkbox(value=live, description="live (draw each step as it is verified)", indent=False,
                                     style=WIDE, layout=widgets.Layout(width="auto"))
        self.run = widgets.Button(description="Run", button_style="primary", icon="play")
        self.status = widgets.HTML()

    def request(self, **policy) -> RunRequest:
        return RunRequest(prompt=self.prompt.value, temperature=self.temperature.value,
                          max_new_tokens=self.max_new_tokens.value, chat=self.chat.value, **policy)

    def say(self, text: str, error: bool = False) -> None:
        colour = "#B00020" if error else "#333"
        self.status.value = f'<span style="color:{colour}">{html.escape(text)}</span>'

    def box(self) -> widgets.Widget:
        return widgets.VBox([self.prompt, self.temperature, self.max_new_tokens, self.chat, self.live,
                             widgets.HBox([self.run, self.status])])


def run_safely(controls: DecodeControls, action):
    """Run ``action()``; an engine error (OptTreeError) becomes the status line instead of a crash."""
    controls.run.disabled = True
    controls.say("decoding …")
    try:
        return action()
    except OptTreeError as err:
        controls.say(f"error: {err}", error=True)
        return None
    finally:
        controls.run.disabled = False


def budget_control(nodes: int) -> widgets.BoundedIntText:
    return widgets.BoundedIntText(value=nodes, min=1, max=4096, description="n (node budget)", style=WIDE)
