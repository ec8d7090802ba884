"""ipywidgets explorers (with their controls, ``controls.py``: the only treeviz modules importing ipywidgets).

- ``TreeExplorer``: a step slider and play button over a log (and "walk through this step": its
  draft layers, verification, accepted path and bonus token as frames), and controls (policy, node budget,
  every parameter of the policy, temperature, …) with a Run button that re-decodes a prompt and updates the
  figures in place; with "live" ticked, each step's tree appears as it is verified.
- ``RegrowExplorer``: one step of a run, its tree re-grown live as δ, n, max depth or the policy change.
- ``CompareExplorer``: two policies side by side, grown from the identical prefix and root of one step
  at the same n, each verified by the same target.
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
import time

import ipywidgets as widgets
import plotly.graph_objects as go
import plotly.io as pio
from IPython.display import display


from . import analysis, analysis_plots
from .logs import as_named, budget_of, group_name, run_name, token_text_map
from .plotly_tree import side_spec, tree_spec
from .controls import WIDE, DecodeControls, PolicyControls, budget_control, run_safely
from .rerun import Rerunner
from .scene import tree_scene
from .stream import stream_html, token_stream
from .walkthrough import walkthrough_figure

PLOTLY_MIME = "application/vnd.plotly.v1+json"
FIGURE_CONFIG = {"displaylogo": False, "responsive": False}


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
        fig.frames = figure.frames if isinstance(figure, go.Figure) else figure.get("frames", ())
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
                                        style=WIDE)
        self.slider.add_class("treeviz-step")
        self.play = widgets.Play(value=0, min=0, max=0, interval=900, description="play")
        widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.tree = FigureView(name="tree")
        self.side = FigureView(name="side") if side else None
        self.facts = widgets.HTML()
        self.stream = widgets.HTML()
        self.walk = FigureView(name="walkthrough")
        self.walk_on = widgets.Checkbox(value=False, description="walk through this step, frame by frame", indent=False)
        self.walk_on.observe(lambda _: self._walk_through(self.slider.value), names="value")
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
        self._walk_through(step)
        if self.side is not None:
            self.side.update(side_spec(self.data, step, texts=self.texts))
        steps = self.data.steps
        a = steps["a"].to_numpy()
        self.facts.value = (f"<b>{html.escape(run_name(self.data.meta, 'log'))}</b> · {step_label(step, len(a))} · "
                            f"A = {a[step]} · E(A) = {steps['ea'].iloc[step]:.2f} · "
                            f"MAL over steps 0–{step}: {a[: step + 1].mean():.2f} (whole run {a.mean():.2f})")
        self.stream.value = stream_html(self.tokens, current=step)

    def _walk_through(self, step: int) -> None:
        """With "walk through this step" ticked: the step's frames (draft layers, verify, accept, bonus)."""
        if self.walk_on.value and self.data is not None and len(self.data.steps):
            self.walk.update(walkthrough_figure(self.data, min(step, len(self.data.steps) - 1), self.texts))
        elif self.walk.figure.data:
            self.walk.update(go.Figure())

    def controls(self) -> widgets.Widget:
        return widgets.HBox([self.play, self.slider, self.walk_on])


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
                                    self.browser.facts, figures, self.browser.walk.widget, self.browser.stream])
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
        data = run_safely(self.decode, lambda: self.rerunner.run(self.decode.request(**self.policy.values()),
                                                                  on_step=on_step))
        if data is not None:
            self.browser.set_data(data, step=0)
            self.decode.say(f"{len(data.steps)} steps, MAL {data.steps['a'].mean():.2f}")
        return data

    def _ipython_display_(self):
        display(self.widget)


class RegrownTree:
    """One policy's tree at one step of a reference log, re-grown from that step's prefix (the same
    text and root), with its policy controls, its facts (E(A), A, the accepted tokens) and its figure."""

    def __init__(self, policy: str, nodes, params: dict | None = None, tokenizer=None, width: int | None = None):
        self.controls = PolicyControls(policy, nodes_control=nodes, params=params)
        self.tree = FigureView(name="tree")
        self.facts = widgets.HTML()
        self.tokenizer, self.width, self.data = tokenizer, width, None

    def grow(self, rerunner: Rerunner, reference, step: int):
        """Re-grow this side's tree at ``step`` of ``reference``; returns the one-step log."""
        values = self.controls.values()
        self.data = rerunner.regrow(reference, step, values["policy"], values["params"])
        texts = token_text_map(self.data, self.tokenizer)
        row, nodes = self.data.steps.iloc[0], self.data.nodes
        shape = f"{int(row['n_nodes']) - 1} drafted nodes over {int(nodes['depth'].max())} layers"
        spec = tree_spec(tree_scene(self.data, 0, texts=texts, width=self.width))
        spec["layout"]["title"]["text"] = (f"step {step} re-grown · {shape}<br>"
                                           f"E(A) = {row['ea']:.2f} · A = {int(row['a'])}")
        self.tree.update(spec)
        path = nodes[nodes["accepted"] & (nodes["node"] > 0)].sort_values("depth")["token"]
        accepted = "".join(texts.get(int(t), f"({int(t)})") for t in path)
        self.facts.value = (f"<b>{html.escape(values['policy'])}</b>, {shape} · "
                            f"E(A) = {row['ea']:.2f} · A = {int(row['a'])} (accepted "
                            f"<code>{html.escape(accepted) or '—'}</code> + bonus)")
        return self.data


class _StepRegrowth:
    """What RegrowExplorer and CompareExplorer share: a reference log (given, or decoded by Run), a
    step slider over it, the token stream with that step outlined, and re-growing every side's tree
    at the chosen step whenever the step or a control changes (no re-decoding of the prompt)."""

    def __init__(self, data, target, drafter, prompt: str, tokenizer, sides: list[RegrownTree], nodes):
        self.rerunner = Rerunner(target, drafter) if target is not None else None
        self.tokenizer = tokenizer or getattr(target, "tokenizer", None)
        self.sides, self.nodes, self.reference, self.tokens = sides, nodes, None, []
        for side in sides:
            side.tokenizer = self.tokenizer
        self.decode = DecodeControls(prompt, live=False)
        self.decode.run.on_click(lambda _: self.run())
        self.decode.run.disabled = self.rerunner is None
        self.slider = widgets.IntSlider(value=0, min=0, max=0, description="step", continuous_update=False,
                                        style=WIDE)
        self.slider.add_class("treeviz-step")
        self.stream = widgets.HTML()
        self.slider.observe(lambda _: self.regrow(), names="value")
        for control in [nodes] + [c for side in sides for c in (side.controls.policy, side.controls.params)]:
            control.observe(lambda change: self.regrow() if change["name"] != "children" else self._watch(),
                            names=["value", "children"])
        self._watch()
        if self.rerunner is None:
            self.decode.say("give a target model (and a drafter) to re-grow trees")
        if data is not None:
            self.set_reference(data)

    def _watch(self) -> None:
        """Re-grow when any parameter control changes (they are rebuilt when the policy changes)."""
        for side in self.sides:
            for control in side.controls.fields.values():
                if not getattr(control, "_treeviz_watched", False):
                    control.observe(lambda _: self.regrow(), names="value")
                    control._treeviz_watched = True

    def set_reference(self, data, step: int = 0) -> None:
        self.reference = data
        self.tokens = token_stream(data, texts=token_text_map(data, self.tokenizer))  # once per reference
        self.slider.max = max(0, len(data.steps) - 1)
        step = min(max(step, 0), self.slider.max)
        if self.slider.value != step:
            self.slider.value = step  # the observer re-grows
        else:
            self.regrow()

    def run(self):
        """Decode the prompt once with the first side's policy: the reference run whose steps give the prefixes."""
        if self.rerunner is None:
            return None
        data = run_safely(self.decode, lambda: self.rerunner.run(
            self.decode.request(**self.sides[0].controls.values())))
        if data is not None:
            self.set_reference(data)
        return data

    def regrow(self) -> list | None:
        """Every side's tree at the chosen step, from the identical prefix and root; None without a reference."""
        if self.reference is None or self.rerunner is None or not len(self.reference.steps):
            return None
        step = self.slider.value
        start = time.perf_counter()
        grown = run_safely(self.decode, lambda: [side.grow(self.rerunner, self.reference, step)
                                                  for side in self.sides])
        if grown is None:
            return None
        self.stream.value = stream_html(self.tokens, current=step)
        self.decode.say(f"{step_label(step, len(self.reference.steps))}: every tree re-grown from the identical "
                        f"prefix ({len(self.reference.prefix(step))} tokens) and root in "
                        f"{1e3 * (time.perf_counter() - start):.0f} ms")
        return grown

    def _ipython_display_(self):
        display(self.widget)


class RegrowExplorer(_StepRegrowth):
    """One step's tree, re-grown live: choose a step of a logged run, then move δ, n, max depth or the
    policy and see the tree, its E(A) and the kept nodes change (each change grows one step from the
    step's prefix: one drafter pass per layer and one target pass, no re-decoding of the prompt)."""

    def __init__(self, data=None, target=None, drafter="self", prompt: str = "", tokenizer=None, *,
                 policy: str = "opt-tree", nodes: int = 16, params: dict | None = None):
        n = budget_control(nodes)
        super().__init__(data, target, drafter, prompt, tokenizer, [RegrownTree(policy, n, params)], n)
        self.widget = widgets.VBox([widgets.HBox([self.sides[0].controls.box(), self.decode.box()]),
                                    widgets.HBox([n, self.slider]), self.sides[0].facts, self.sides[0].tree.widget,
                                    self.stream])
        self.widget.add_class("treeviz-regrow")


class CompareExplorer(_StepRegrowth):
    """Two policies side by side, like for like: at one step of a reference run (given, or decoded
    by Run with the left policy), both grow their tree from the identical prefix and root at the
    same node budget n, and the same target verifies each: their E(A) and the accepted path each
    would get from there."""

    def __init__(self, data=None, target=None, drafter="self", prompt: str = "", tokenizer=None, *,
                 policies: tuple[str, str] = ("opt-tree", "chain"), nodes: int = 8):
        n = budget_control(nodes)
        sides = [RegrownTree(name, n, width=460) for name in policies]
        super().__init__(data, target, drafter, prompt, tokenizer, sides, n)

        def row(parts):  # the two sides in columns of one width, so the trees start level
            for part in parts:
                part.layout.width = "480px"
            return widgets.HBox(parts, layout=widgets.Layout(flex_flow="row nowrap", align_items="flex-start"))

        self.widget = widgets.VBox([self.decode.box(), widgets.HBox([n, self.slider]),
                                    row([side.controls.box() for side in sides]), row([side.facts for side in sides]),
                                    row([side.tree.widget for side in sides]), self.stream])
        self.widget.add_class("treeviz-compare")


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
