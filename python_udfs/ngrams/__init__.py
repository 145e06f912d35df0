"""Stage 4, the n-gram catalog over GPT-NeoX token ids: the tokenizer (``tokenizer``), exact
out-of-core counts (``counts``: tokenize, pack, partial counts, sharded reduce), and causal-LM
next-token probabilities for the top tables (``lm``, ``probabilities``)."""
