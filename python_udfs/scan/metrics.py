"""The scan's metrics (Confirm Labs' ``pile_scan``): where one more token of context changes a model's mind.

For every position of a token sequence there are two prompts ending at the same token: a
*short* one of ``seq_len`` tokens (default 4) and a *long* one with one more token of
context in front (``seq_len + 1``). Both go through the model with no BOS token, and the
next-token distributions at their last positions are compared:

- ``p_short``, ``p_long``: the largest probability of each, at ``short_max_id`` / ``long_max_id``;
- ``p_delta_max``: max over the vocabulary of ``|p_short - p_long|``;
- ``logit_excite_max`` / ``logit_inhibit_max``: max of ``long - short`` / ``short - long`` logits;
- ``js``: **the catalog's name for the symmetric KL divergence** ``(KL(s||l) + KL(l||s)) / 2``,
  kept with that meaning so numbers compare with the published catalog;
- ``jensen_shannon``: the true Jensen-Shannon divergence (nats, at most ln 2).

**One forward pass serves two windows.** In a causal LM the hidden state at position ``k``
depends only on tokens ``0..k``, so feeding the 5-token row ``ids[j : j+5]`` gives, at its
last position, the long prompt of window ``j``, and at position 3 the 4-token prompt
``ids[j : j+4]``, which is exactly the short prompt of window ``j - 1``. Each window costs
one row of ``seq_len + 1`` tokens instead of two passes of ``2 seq_len + 1`` tokens, every
row has the same length (no padding, no attention mask), and only the last two positions
go through the LM head (``logits_to_keep=2``). ``tests/scan/test_scan_metrics.py`` checks
every reported number against two separate unbatched forward passes per window
(``naive_window_metrics``).

**A row's first token is computed once per distinct token.** Position 0 of a row sees only
its own token, so its keys and values in every layer depend on that token alone. For each
chunk of rows (``prefix_rows``), the distinct first tokens go through the model once, alone
(``_first_token_states``), and every row then runs its other ``seq_len`` tokens with those
keys and values as a one-token cache (``_cached_last_logits``). On real text a chunk of a few
thousand rows has about a third to a half as many distinct first tokens, so a window costs
about 4.3-4.5 tokens of model work instead of 5. Rows are not reordered, so the pairing of a
row's long logits with the next row's short logits is unchanged. Before a chunk uses the
cache, its first rows are computed both ways and compared (``_prefix_cache_agrees``); a model
whose cache does not reproduce the plain pass (or that has none) is scanned the plain way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

METRICS = ("p_short", "p_long", "short_max_id", "long_max_id", "js", "jensen_shannon",
           "p_delta_max", "logit_excite_max", "logit_inhibit_max")


def window_metrics(short_logits, long_logits) -> dict:
    """Per-row scan metrics from the last-position logits of short and long prompts ([n, V])."""
    import torch

    short_logits, long_logits = short_logits.float(), long_logits.float()
    ls = torch.log_softmax(short_logits, dim=-1)
    ll = torch.log_softmax(long_logits, dim=-1)
    ps, pl = ls.exp(), ll.exp()
    kl_sl = (ps * (ls - ll)).sum(-1)
    kl_ls = (pl * (ll - ls)).sum(-1)
    log_m = torch.logaddexp(ls, ll) - math.log(2.0)
    jensen_shannon = 0.5 * (ps * (ls - log_m)).sum(-1) + 0.5 * (pl * (ll - log_m)).sum(-1)
    p_short, short_max_id = ps.max(-1)
    p_long, long_max_id = pl.max(-1)
    diff = long_logits - short_logits
    return {
        "p_short": p_short, "p_long": p_long, "short_max_id": short_max_id, "long_max_id": long_max_id,
        "js": (kl_sl + kl_ls) / 2, "jensen_shannon": jensen_shannon.clamp_min(0.0),
        "p_delta_max": (ps - pl).abs().max(-1).values,
        "logit_excite_max": diff.max(-1).values, "logit_inhibit_max": (-diff).max(-1).values,
    }


def _last_logits(lm, rows, keep: int):
    """Logits of the last ``keep`` positions of equal-length rows, without BOS or padding."""
    try:
        return lm(input_ids=rows, logits_to_keep=keep).logits[:, -keep:]
    except TypeError:  # a model class without logits_to_keep
        return lm(input_ids=rows).logits[:, -keep:]


#: Keys and values of the first-token cache held at once (a chunk of rows' distinct tokens).
PREFIX_CACHE_BYTES = 256 * 2**20


def _kv_bytes_per_token(lm) -> int:
    """Bytes of one token's keys and values over all layers, from the model's config (an estimate)."""
    config = lm.config
    layers = int(getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layer", 0) or 32)
    heads = int(getattr(config, "num_attention_heads", 0) or getattr(config, "n_head", 0) or 1)
    hidden = int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0) or 4096)
    kv_heads = int(getattr(config, "num_key_value_heads", 0) or heads)
    head_dim = int(getattr(config, "head_dim", 0) or hidden // heads)
    return 2 * layers * kv_heads * head_dim * next(lm.parameters()).element_size()


def _chunk_rows(lm, batch_size: int, prefix_rows: int | None) -> int:
    """Rows per first-token chunk: ``prefix_rows`` (default: what ``PREFIX_CACHE_BYTES`` holds), in whole batches."""
    if prefix_rows is None:
        prefix_rows = PREFIX_CACHE_BYTES // max(1, _kv_bytes_per_token(lm))
    return -(-max(int(prefix_rows), batch_size) // batch_size) * batch_size


def _first_token_states(lm, tokens: np.ndarray, batch_tokens: int) -> list[tuple]:
    """Per layer, the keys and values of each token alone at position 0: [(K, V)] with K [len(tokens), ...]."""
    import torch

    device = next(lm.parameters()).device
    pieces = []
    for start in range(0, len(tokens), batch_tokens):
        ids = torch.as_tensor(tokens[start:start + batch_tokens, None], device=device)
        cache = lm.base_model(input_ids=ids, use_cache=True).past_key_values
        pieces.append([(layer.keys, layer.values) for layer in cache.layers])
    return [(torch.cat([p[i][0] for p in pieces]), torch.cat([p[i][1] for p in pieces]))
            for i in range(len(pieces[0]))]


def _cached_last_logits(lm, rows, states: list[tuple], which, keep: int):
    """Logits of the last ``keep`` positions of ``rows``, their first token's keys and values taken from ``states``."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(ddp_cache_data=[(k[which], v[which]) for k, v in states], config=lm.config)
    tail = rows[:, 1:]
    positions = torch.arange(1, rows.shape[1], device=rows.device).expand(len(rows), -1)
    out = lm(input_ids=tail, past_key_values=cache, position_ids=positions, logits_to_keep=keep, use_cache=True)
    return out.logits[:, -keep:]


def _prefix_cache_agrees(lm, rows, states: list[tuple], which, keep: int) -> bool:
    """Whether the cached pass gives the plain pass's logits on ``rows`` (a few), up to the dtype's rounding."""
    import torch

    try:
        cached = _cached_last_logits(lm, rows, states, which, keep).float()
    except Exception:  # noqa: BLE001  (a model class without a usable cache: the plain pass it is)
        return False
    plain = _last_logits(lm, rows, keep).float()
    scale = 1.0 + float(plain.abs().max())
    tolerance = 1e-3 if next(lm.parameters()).dtype in (torch.float32, torch.float64) else 5e-2
    return bool(torch.isfinite(cached).all()) and float((cached - plain).abs().max()) <= tolerance * scale


def _window_rows(sequences: Sequence[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of ``width`` tokens every sequence is scanned in, with each row's sequence and position.

    Row j of a sequence holds ids[j : j+width] for j = 0 .. L-width+1; the last row's final
    token is a filler (it never influences position width-2, the only one read there)."""
    rows, row_seq, row_pos = [], [], []
    for index, ids in enumerate(sequences):
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) < width:
            continue
        padded = np.concatenate([ids, ids[-1:]])
        view = np.lib.stride_tricks.sliding_window_view(padded, width)
        rows.append(view)
        row_seq.append(np.full(len(view), index, dtype=np.int64))
        row_pos.append(np.arange(len(view), dtype=np.int64))
    if not rows:
        return np.zeros((0, width), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows), np.concatenate(row_seq), np.concatenate(row_pos)


def model_tokens(lm, sequences: Sequence[np.ndarray], seq_len: int = 4, batch_size: int = 256,
                 prefix_cache: bool = True, prefix_rows: int | None = None) -> int:
    """Tokens ``scan_windows`` runs through the model for ``sequences`` (rows' tokens, cached first tokens once)."""
    width = seq_len + 1
    firsts = _window_rows(sequences, width)[0][:, 0]
    if not prefix_cache or width == 1:
        return len(firsts) * width
    chunk = _chunk_rows(lm, batch_size, prefix_rows)
    distinct = sum(len(np.unique(firsts[i:i + chunk])) for i in range(0, len(firsts), chunk))
    return len(firsts) * seq_len + distinct


def scan_windows(lm, sequences: Sequence[np.ndarray], seq_len: int = 4, batch_size: int = 256,
                 on_batch: Callable[[int], None] | None = None, prefix_cache: bool = True,
                 prefix_rows: int | None = None) -> dict[str, np.ndarray]:
    """Metrics of every window of every sequence, batched, one row of ``seq_len + 1`` tokens per window.

    Window ``j`` of a sequence ``ids`` is the long prompt ``ids[j : j+seq_len+1]`` and the
    short prompt ``ids[j+1 : j+seq_len+1]``; a sequence of ``L`` tokens has
    ``max(0, L - seq_len)`` windows. Returns arrays of equal length (windows in sequence
    order, then position order) with ``seq_index`` and ``position`` besides the metrics.
    ``prefix_cache``: compute each chunk's distinct first tokens once (see the module's
    docstring); ``prefix_rows``: rows per chunk (default: as many as ``PREFIX_CACHE_BYTES`` of
    keys and values allow, at least ``batch_size``).
    """
    import torch

    width = seq_len + 1
    names = ("seq_index", "position", *METRICS)
    all_rows, row_seq_all, row_pos_all = _window_rows(sequences, width)
    if not len(all_rows):
        return {k: np.zeros(0, dtype=np.float32 if k not in ("seq_index", "position") else np.int64) for k in names}
    # Row r's long logits pair with row r+1's short logits when both rows are of one sequence.
    pair_ok = np.zeros(len(all_rows), dtype=bool)
    pair_ok[:-1] = row_seq_all[:-1] == row_seq_all[1:]
    device = next(lm.parameters()).device
    chunk_rows = _chunk_rows(lm, batch_size, prefix_rows)
    use_cache = prefix_cache and width > 1
    out: dict[str, list] = {k: [] for k in METRICS}
    seq_out, pos_out = [], []
    carry = None  # last row's long logits of the previous batch
    states = inverse = None
    chunk_end = 0
    with torch.no_grad():
        for start in range(0, len(all_rows), batch_size):
            stop = min(start + batch_size, len(all_rows))
            batch = torch.as_tensor(all_rows[start:stop], device=device)
            if use_cache and start >= chunk_end:  # a new chunk: its distinct first tokens, once each
                chunk_start, chunk_end = start, min(len(all_rows), start + chunk_rows)
                firsts, inverse = np.unique(all_rows[chunk_start:chunk_end, 0], return_inverse=True)
                inverse = inverse.reshape(-1)
                try:
                    states = _first_token_states(lm, firsts, batch_size * width)
                except Exception:  # noqa: BLE001  (no base model or cache of this kind: known at the first chunk)
                    if chunk_start > 0:
                        raise
                    states = None
                probe = slice(0, min(4, stop - start))  # the first chunk: does the cache reproduce the plain pass?
                if chunk_start == 0 and (states is None or not _prefix_cache_agrees(
                        lm, batch[probe], states, torch.as_tensor(inverse[probe], device=device), 2)):
                    use_cache, states = False, None
            if use_cache:
                which = torch.as_tensor(inverse[start - chunk_start:stop - chunk_start], device=device)
                logits = _cached_last_logits(lm, batch, states, which, 2).float()
            else:
                logits = _last_logits(lm, batch, 2).float()
            shorts, longs = logits[:, 0], logits[:, 1]
            prev = torch.cat([carry, longs[:-1]]) if carry is not None else longs[:-1]
            first = start if carry is not None else start + 1  # rows whose short pairs with prev
            carry = longs[-1:]
            long_rows = np.arange(first - 1, stop - 1)
            keep = pair_ok[long_rows]
            if keep.any():
                sel = torch.as_tensor(np.nonzero(keep)[0], device=device)
                cur = shorts[(first - start):]
                metrics = window_metrics(cur[sel], prev[sel])
                for k in METRICS:
                    out[k].append(metrics[k].cpu().numpy())
                seq_out.append(row_seq_all[long_rows[keep]])
                pos_out.append(row_pos_all[long_rows[keep]])
            if on_batch is not None:
                on_batch(int(keep.sum()))
    result = {k: np.concatenate(v) for k, v in out.items()}
    result["seq_index"] = np.concatenate(seq_out)
    result["position"] = np.concatenate(pos_out)
    return result


def naive_window_metrics(lm, ids: np.ndarray, position: int, seq_len: int = 4) -> dict:
    """The definition, one window at a time: two separate unbatched forward passes."""
    import torch

    ids = np.asarray(ids, dtype=np.int64)
    long = torch.as_tensor(ids[position: position + seq_len + 1][None], device=next(lm.parameters()).device)
    with torch.no_grad():
        long_logits = lm(input_ids=long).logits[:, -1]
        short_logits = lm(input_ids=long[:, 1:]).logits[:, -1]
    return {k: v.cpu().numpy()[0] for k, v in window_metrics(short_logits, long_logits).items()}
