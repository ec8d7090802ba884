"""treeviz: pictures of tree speculative decoding, drawn from TreeLog data only.

It reads logs (``opttree_core.TreeLog.load``) and DataFrames; it never runs a model,
except ``treeviz.widgets``' explorers, which re-decode a prompt through ``opttree_core``'s
public API (``treeviz.rerun``).

    logs           load_log(s), step_nodes, step_info, token texts, visible whitespace
    graph          step_graph (networkx), accepted_path, ancestor_matrix
    layout         tidy_layout / tidy_positions (pure Python), dot_layout (Graphviz)
    scene          tree_scene: positions, labels that fit, hover data (shared by renderers)
    plotly_tree    tree_figure, attention_mask_figure, icicle_figure, side_figure (+ *_spec dicts)
    mpl_tree       tree_figure_mpl, draw_scene
    stream         token_stream, stream_html
    analysis       summarize_logs, ea_a_frame, ea_a_counts, correlation, mal_by_budget,
                   speedup_stats, acceptance_by_depth/rank, timeline_frame
    analysis_plots ea_heatmap_figure, mal_budget_figure, speedup_figure, pooled_speedup_figure,
                   acceptance_figure, timeline_figure (plotly)
    paper, static  the same in matplotlib for print; save_figure, save_paper_figures
    export         export_html: one standalone page, every step browsable offline
    walkthrough    walkthrough_figure: one step end to end (draft layers, mask, verify, accept, bonus) as frames
    browser        open_page: headless Chromium screenshot + console errors
    widgets        TreeExplorer, CompareExplorer, AnalysisDashboard (ipywidgets)
    teaching       the notebooks' helpers: fast mode, offline plotly, step table, OPT-Tree trace, χ² test
    style          colours and fonts; projector(): larger fonts and a label on every node, for a lecture hall
"""
from .analysis import correlation, ea_a_frame, summarize_logs
from .analysis_plots import (
    acceptance_figure,
    ea_heatmap_figure,
    mal_budget_figure,
    pooled_speedup_figure,
    speedup_figure,
    timeline_figure,
)
from .export import export_html
from .graph import accepted_path, ancestor_matrix, step_graph
from .layout import dot_layout, tidy_layout, tidy_positions
from .logs import load_log, load_logs, visible
from .plotly_tree import attention_mask_figure, icicle_figure, side_figure, tree_figure
from .scene import tree_scene
from .stream import stream_html, token_stream
from .style import projector

__all__ = [
    "acceptance_figure",
    "accepted_path",
    "ancestor_matrix",
    "attention_mask_figure",
    "correlation",
    "dot_layout",
    "ea_a_frame",
    "ea_heatmap_figure",
    "export_html",
    "icicle_figure",
    "load_log",
    "load_logs",
    "mal_budget_figure",
    "pooled_speedup_figure",
    "projector",
    "side_figure",
    "speedup_figure",
    "step_graph",
    "stream_html",
    "summarize_logs",
    "tidy_layout",
    "tidy_positions",
    "timeline_figure",
    "token_stream",
    "tree_figure",
    "tree_scene",
    "visible",
]
