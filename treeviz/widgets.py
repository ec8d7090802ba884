"""ipywidgets explorers (the only treeviz module that imports ipywidgets).

- ``TreeExplorer``: a step slider and play button over a log, and controls (policy, node budget,
  every parameter of the policy, temperature, …) with a Run button that re-decodes a prompt and updates the
  figures in place; with "live" ticked, each step's tree appears as it is verified.
- ``CompareExplorer``: two policies side by side on the same prompt and step.
- ``AnalysisDashboard``: pick runs, groups and policies; the E(A)-vs-A heatmap with its r
  and the MAL-vs-budget curves update in place.

Every figure is a ``FigureView``: a plain ``go.Figure`` on the Python side, shown in an ipywidgets
``Output`` whose ``outputs`` state holds the figure's **complete** plotly spec as one display item
(mime type ``application/vnd.plotly.v1+json``, drawn by plotly's own JupyterLab renderer). Each update
replaces that state whole, so a front end that missed an update, opened late, or was reloaded with
the kernel alive draws the latest figure from the widget state alone. Why not plotly's
``FigureWidget``: see treeviz/README.md ("Why the widgets don't use FigureWidget").
"""
from __future__ import annotations

import html
import json

import ipywidgets as widgets
import plotly.graph_objects as go
import plotly.io as pio
from IPython.display import display

from . import analysis, analysis_plots
from .logs import as_named, budget_of, group_name, run_name, token_text_map
from .plotly_tree import side_spec, tree_spec
from .rerun import Rerunner, RunRequest, budget_params, parse_param, policy_fields, policy_names
from .scene import tree_scene
from .stream import stream_html, token_stream

PLOTLY_MIME = "application/vnd.plotly.v1+json"
FIGURE_CONFIG = {"displaylogo": False, "responsive": False}
_WIDE = {"description_width": "initial"}  # descriptions in full, never cut off


def _wrapping() -> widgets.Layout:
    """A row that wraps when its figures don't fit side by side."""
    return widgets.Layout(display="flex", flex_flow="row wrap", align_items="flex-start")


def _parts(figure) -> tuple[list, object]:
    """Traces and layout of a ``go.Figure`` (as objects: no array encoding) or of a spec dict."""
    if isinstance(figure, go.Figure):
        return list(figure.data), figure.layout
    return list(figure.get("data", [])), figure.get("layout", {})


def _type(trace) -> str:
    return trace.get("type", "scatter") if isinstance(trace, dict) else trace.type


def figure_output(figure: go.Figure) -> dict:
    """One ``display_data`` output holding the complete figure (plain JSON: no numpy, no typed arrays)."""
    spec = json.loads(pio.to_json(figure, validate=False, engine="json"))
    spec["config"] = FIGURE_CONFIG
    title = figure.layout.title.text or "plotly figure"
    return {"output_type": "display_data", "metadata": {},
            "data": {PLOTLY_MIME: spec, "text/plain": f"<figure: {title}>"}}


class FigureView:
    """A plotly figure shown in a widget; ``update(spec_or_figure)`` redraws it from the complete spec.

    ``figure`` is the Python-side ``go.Figure`` (updated in place); ``widget`` the ``Output`` whose
    state is the figure to draw; ``revision`` counts the updates sent."""

    def __init__(self, figure=None, name: str = "figure"):
        data, layout = _parts(figure) if figure is not None else ([], {})
        self.figure = go.Figure(data=data, layout=layout)
        self.widget = widgets.Output()
        self.widget.add_class("treeviz-figure")
        self.widget.add_class(f"treeviz-{name}")
        self.revision = 0
        self._publish()

    def update(self, figure) -> None:
        new, layout = _parts(figure)
        fig = self.figure
        same = len(fig.data) == len(new) and all(t.type == _type(n) for t, n in zip(fig.data, new))
        with fig.batch_update():
            if same:
                for trace, data in zip(fig.data, new):
                    trace.update(data, overwrite=True)
                fig.update_layout(layout, overwrite=True)
            else:
                fig.data = []
                fig.layout = layout
                fig.add_traces(new)
        self._publish()

    def _publish(self) -> None:
        """The widget's state becomes the whole figure (nothing drawn while it has no trace)."""
        self.revision += 1
        self.widget.outputs = (figure_output(self.figure),) if self.figure.data else ()


def step_label(step: int, n_steps: int) -> str:
    """How every explorer and the HTML page name a step: ``step 3 / 9`` (steps count from 0, as the slider)."""
    return f"step {step} / {n_steps - 1}"


class StepBrowser:
    """A step slider with a play button over one log, drawing its tree, mask/icicle and stream."""

    def __init__(self, data=None, tokenizer=None, side: bool = True, description: str = "step"):
        self.data, self.tokenizer, self.texts, self.tokens = None, tokenizer, {}, []
        self.slider = widgets.IntSlider(value=0, min=0, max=0, description=description, continuous_update=False,
                                        style=_WIDE)
        self.slider.add_class("treeviz-step")
        self.play = widgets.Play(value=0, min=0, max=0, interval=900, description="play")
        widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.tree = FigureView(name="tree")
        self.side = FigureView(name="side") if side else None
        self.facts = widgets.HTML()
        self.stream = widgets.HTML()
        self.slider.observe(lambda change: self.show(change["new"]), names="value")
        if data is not None:
            self.set_data(data)

    def set_data(self, data, step: int = 0) -> None:
        self.data, self.texts = data, token_text_map(data, self.tokenizer)
        self.tokens = token_stream(data, texts=self.texts)
        last = max(0, len(data.steps) - 1)
        self.play.max = self.slider.max = last
        step = min(max(step, 0), last)
        if self.slider.value != step:
            self.slider.value = step  # the observer draws it
        else:
            self.show(step)

    def show(self, step: int) -> None:
        if self.data is None or not len(self.data.steps):
            return
        self.tree.update(tree_spec(tree_scene(self.data, step, texts=self.texts)))
        if self.side is not None:
            self.side.update(side_spec(self.data, step, texts=self.texts))
        steps = self.data.steps
        a = steps["a"].to_numpy()
        self.facts.value = (f"<b>{html.escape(run_name(self.data.meta, 'log'))}</b> · {step_label(step, len(a))} · "
                            f"A = {a[step]} · E(A) = {steps['ea'].iloc[step]:.2f} · "
                            f"MAL over steps 0–{step}: {a[: step + 1].mean():.2f} (whole run {a.mean():.2f})")
        self.stream.value = stream_html(self.tokens, current=step)

    def controls(self) -> widgets.Widget:
        return widgets.HBox([self.play, self.slider])


def _param_control(key: str, kind, value) -> widgets.Widget:
    """A control for one policy parameter, typed from its config: numbers and booleans get their own
    controls; anything else (optional values, tuples, paths) a text box read by the registry."""
    if kind is bool:
        return widgets.Checkbox(value=bool(value), description=key, indent=False, style=_WIDE)
    if kind is int:
        return widgets.IntText(value=int(value), description=key, style=_WIDE)
    if kind is float:
        return widgets.FloatText(value=float(value), step=0.01, description=key, style=_WIDE)
    return widgets.Text(value=_as_text(value), description=key, style=_WIDE, layout=widgets.Layout(width="420px"))


def _as_text(value) -> str:
    """How a text control shows a parameter value: JSON, "none" for None (what the registry parses)."""
    return "none" if value is None else value if isinstance(value, str) else json.dumps(
        list(value) if isinstance(value, tuple) else value)


class PolicyControls:
    """The policy dropdown (every policy in ``opttree_core.policies.registry.POLICIES``), the node
    budget n, and one control per parameter of the chosen policy's config. n sets what the
    policy's ``for_budget(n)`` sets; the other parameters keep what was typed into them."""

    def __init__(self, policy: str = "opt-tree", nodes: int = 16, params: dict | None = None):
        names = policy_names()
        self.policy = widgets.Dropdown(options=names, value=policy if policy in names else names[0],
                                       description="policy", style=_WIDE)
        self.nodes = widgets.BoundedIntText(value=nodes, min=1, max=4096, description="n (node budget)", style=_WIDE)
        self.params = widgets.VBox()
        self.fields: dict[str, widgets.Widget] = {}
        self.policy.observe(lambda _: self._rebuild(), names="value")
        self.nodes.observe(self._budget_changed, names="value")
        self._rebuild(params or {})

    def _rebuild(self, overrides: dict | None = None) -> None:
        name, kinds = self.policy.value, policy_fields(self.policy.value)
        values = {**budget_params(name, self.nodes.value), **{k: v for k, v in (overrides or {}).items() if k in kinds}}
        self.fields = {key: _param_control(key, kind, values[key]) for key, kind in kinds.items()}
        self.params.children = list(self.fields.values())

    def _budget_changed(self, change) -> None:
        name = self.policy.value
        old, new = budget_params(name, change["old"]), budget_params(name, change["new"])
        for key, value in new.items():
            if old[key] != value:
                control = self.fields[key]
                control.value = _as_text(value) if isinstance(control, widgets.Text) else value

    def field(self, key: str) -> widgets.Widget:
        """The control of parameter ``key`` of the chosen policy."""
        return self.fields[key]

    def values(self) -> dict:
        """``policy`` and its ``params``, typed (a text that is not a valid value is an OptTreeError)."""
        name = self.policy.value
        params = {key: parse_param(name, key, c.value) if isinstance(c, widgets.Text) else c.value
                  for key, c in self.fields.items()}
        return {"policy": name, "params": params}

    def box(self) -> widgets.Widget:
        return widgets.VBox([self.policy, self.nodes, self.params])


class DecodeControls:
    """Prompt, temperature, max new tokens, chat, live and the Run button."""

    def __init__(self, prompt: str = "", max_new_tokens: int = 32, chat: bool = False, live: bool = True):
        self.prompt = widgets.Textarea(value=prompt, description="prompt", style=_WIDE,
                                       layout=widgets.Layout(width="480px"))
        self.temperature = widgets.FloatSlider(value=0.0, min=0.0, max=2.0, step=0.05, description="temperature",
                                               style=_WIDE)
        self.max_new_tokens = widgets.IntSlider(value=max_new_tokens, min=1, max=512, description="new tokens",
                                                style=_WIDE)
        self.chat = widgets.Checkbox(value=chat, description="chat template", indent=False, style=_WIDE)
        self.live = widgets.Checkbox(value=live, description="live (draw each step as it is verified)", indent=False,
                                     style=_WIDE, layout=widgets.Layout(width="auto"))
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


def _run_safely(controls: DecodeControls, action):
    """Run ``action()``; an engine error (OptTreeError) becomes the status line instead of a crash."""
    from opttree_core.errors import OptTreeError

    controls.run.disabled = True
    controls.say("decoding …")
    try:
        return action()
    except OptTreeError as err:
        controls.say(f"error: {err}", error=True)
        return None
    finally:
        controls.run.disabled = False


class TreeExplorer:
    """Browse a log step by step, or decode a prompt (``target``/``drafter``) and browse that.

    ``target``: a ``LoadedModel`` or a model spec (loaded on the first Run), ``drafter``: a
    ``Drafter`` or a spec (default ``"self"``). ``run()`` is what the Run button does."""

    def __init__(self, data=None, target=None, drafter="self", prompt: str = "", tokenizer=None, *,
                 policy: str = "opt-tree", nodes: int = 16, params: dict | None = None,
                 max_new_tokens: int = 32, chat: bool = False, live: bool = True):
        self.rerunner = Rerunner(target, drafter) if target is not None else None
        self.browser = StepBrowser(data, tokenizer or getattr(target, "tokenizer", None))
        self.policy = PolicyControls(policy, nodes, params)
        self.decode = DecodeControls(prompt, max_new_tokens, chat, live)
        self.decode.run.on_click(lambda _: self.run())
        self.decode.run.disabled = self.rerunner is None
        if self.rerunner is None:
            self.decode.say("give TreeExplorer a target model to decode prompts")
        figures = widgets.Box([self.browser.tree.widget, self.browser.side.widget], layout=_wrapping())
        self.widget = widgets.VBox([widgets.HBox([self.policy.box(), self.decode.box()]), self.browser.controls(),
                                    self.browser.facts, figures, self.browser.stream])
        self.widget.add_class("treeviz-explorer")

    @property
    def data(self):
        return self.browser.data

    def run(self):
        """Decode the prompt with the controls' settings; returns the new log (None on an error)."""
        if self.rerunner is None:
            return None
        live = self.decode.live.value
        on_step = (lambda so_far: self.browser.set_data(so_far, step=len(so_far.steps) - 1)) if live else None
        data = _run_safely(self.decode, lambda: self.rerunner.run(self.decode.request(**self.policy.values()),
                                                                  on_step=on_step))
        if data is not None:
            self.browser.set_data(data, step=0)
            self.decode.say(f"{len(data.steps)} steps, MAL {data.steps['a'].mean():.2f}")
        return data

    def _ipython_display_(self):
        display(self.widget)


class CompareExplorer:
    """Two policies side by side on the same prompt and step (logs given, or decoded by Run)."""

    def __init__(self, left=None, right=None, target=None, drafter="self", prompt: str = "", tokenizer=None):
        self.rerunner = Rerunner(target, drafter) if target is not None else None
        tokenizer = tokenizer or getattr(target, "tokenizer", None)
        self.sides = [StepBrowser(left, tokenizer, side=False), StepBrowser(right, tokenizer, side=False)]
        self.policies = [PolicyControls("opt-tree"), PolicyControls("chain", nodes=4)]
        self.decode = DecodeControls(prompt, live=False)
        self.slider = widgets.IntSlider(value=0, min=0, max=self._last(), description="step", continuous_update=False,
                                        style=_WIDE)
        self.slider.add_class("treeviz-step")
        self.play = widgets.Play(value=0, min=0, max=self._last(), interval=900)
        widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.slider.observe(lambda change: self.show(change["new"]), names="value")
        self.decode.run.on_click(lambda _: self.run())
        self.decode.run.disabled = self.rerunner is None
        columns = [widgets.VBox([p.box(), s.facts, s.tree.widget, s.stream]) for p, s in zip(self.policies, self.sides)]
        self.widget = widgets.VBox([self.decode.box(), widgets.HBox([self.play, self.slider]),
                                    widgets.Box(columns, layout=_wrapping())])
        self.widget.add_class("treeviz-compare")

    def _last(self) -> int:
        return max([len(s.data.steps) - 1 for s in self.sides if s.data is not None] + [0])

    def show(self, step: int) -> None:
        for side in self.sides:
            if side.data is not None and len(side.data.steps):
                side.show(min(step, len(side.data.steps) - 1))

    def run(self):
        """Decode the prompt with both policies; returns the two logs (None on an error)."""
        if self.rerunner is None:
            return None
        logs = _run_safely(self.decode, lambda: [self.rerunner.run(self.decode.request(**p.values()))
                                                 for p in self.policies])
        if logs is None:
            return None
        for side, data in zip(self.sides, logs):
            side.set_data(data)
        self.play.max = self.slider.max = self._last()
        self.show(self.slider.value)
        self.decode.say(" vs ".join(f"{d.meta.get('policy')}: MAL {d.steps['a'].mean():.2f}" for d in logs))
        return logs

    def _ipython_display_(self):
        display(self.widget)


class AnalysisDashboard:
    """Pick runs, groups and policies; the E(A)-vs-A heatmap (with r) and MAL-vs-budget curves update."""

    def __init__(self, logs):
        self.logs = as_named(logs)
        metas = {name: data.meta for name, data in self.logs.items()}
        self.runs = widgets.SelectMultiple(options=list(self.logs), value=list(self.logs), description="runs", rows=8)
        self.groups = widgets.SelectMultiple(options=sorted({group_name(m) for m in metas.values()}),
                                             description="groups", rows=4)
        self.groups.value = self.groups.options
        self.policies = widgets.SelectMultiple(options=sorted({str(m.get("policy", "?")) for m in metas.values()}),
                                               description="policies", rows=4)
        self.policies.value = self.policies.options
        self.heatmap, self.curves = FigureView(name="heatmap"), FigureView(name="curves")
        self.stats = widgets.HTML()
        for control in (self.runs, self.groups, self.policies):
            control.observe(lambda _: self.refresh(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.runs, self.groups, self.policies]), self.stats,
                                    self.heatmap.widget, self.curves.widget])
        self.widget.add_class("treeviz-dashboard")
        self.refresh()

    def selected(self) -> dict:
        groups, policies = set(self.groups.value), set(self.policies.value)
        return {name: data for name, data in self.logs.items() if name in self.runs.value
                and group_name(data.meta) in groups and str(data.meta.get("policy", "?")) in policies}

    def refresh(self) -> None:
        chosen = self.selected()
        frame = analysis.ea_a_frame(chosen)
        groups = sorted(frame["group"].unique()) if len(frame) else []
        self.heatmap.update(analysis_plots.ea_heatmap_figure(frame, groups))
        self.curves.update(analysis_plots.mal_budget_figure(analysis.summarize_logs(chosen), groups))
        lines = [f"<b>{html.escape(g)}</b>: {analysis.correlation(frame[frame['group'] == g])}" for g in groups]
        budgets = sorted({b for d in chosen.values() if (b := budget_of(d.meta)) is not None})
        self.stats.value = (f"{len(chosen)} runs, {len(frame)} steps, budgets {budgets}<br>" + "<br>".join(lines)
                            if chosen else "no run selected")

    def _ipython_display_(self):
        display(self.widget)
