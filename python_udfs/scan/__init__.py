"""Stage 5, the prompt scan: where one more token of context changes a causal LM's mind.

``model`` (the LM and its tokenizer), ``metrics`` (the window metrics and the batched
forward passes), ``provenance`` (which document a window came from, windows per
document), ``runner`` (the scan as run_step steps over parts of documents or packed
sequences) and ``cli`` (``python -m python_udfs.scan``).
"""
