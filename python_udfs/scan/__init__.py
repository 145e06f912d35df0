"""Stage 5, the prompt scan: where one more token of context changes a causal LM's mind."""
