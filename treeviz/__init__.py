"""treeviz: pictures of tree speculative decoding, drawn from TreeLog data only.

It reads logs (``opttree_core.TreeLog.load``) and DataFrames; it never runs a model.
"""
