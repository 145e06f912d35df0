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


def scan_windows(lm, sequences: Sequence[np.ndarray], seq_len: int = 4, batch_size: int = 256,
                 on_batch: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Metrics of every window of every sequence, batched, one row of ``seq_len + 1`` tokens per window.

    Window ``j`` of a sequence ``ids`` is the long prompt ``ids[j : j+seq_len+1]`` and the
    short prompt ``ids[j+1 : j+seq_len+1]``; a sequence of ``L`` tokens has
    ``max(0, L - seq_len)`` windows. Returns arrays of equal length (windows in sequence
    order, then position order) with ``seq_index`` and ``position`` besides the metrics.
    """
    import torch

    width = seq_len + 1
    # Row j of a sequence holds ids[j : j+width] for j = 0 .. L-width+1; the last row's final
    # token is a filler (it never influences position seq_len-1, the only one read there).
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
    names = ("seq_index", "position", *METRICS)
    if not rows:
        return {k: np.zeros(0, dtype=np.float32 if k not in ("seq_index", "position") else np.int64) for k in names}
    all_rows = np.concatenate(rows)
    row_seq_all, row_pos_all = np.concatenate(row_seq), np.concatenate(row_pos)
    # Row r's long logits pair with row r+1's short logits when both rows are of one sequence.
    pair_ok = np.zeros(len(all_rows), dtype=bool)
    pair_ok[:-1] = row_seq_all[:-1] == row_seq_all[1:]
    device = next(lm.parameters()).device
    out: dict[str, list] = {k: [] for k in METRICS}
    seq_out, pos_out = [], []
    carry = None  # last row's long logits of the previous batch
    with torch.no_grad():
        for start in range(0, len(all_rows), batch_size):
            stop = min(start + batch_size, len(all_rows))
            batch = torch.as_tensor(all_rows[start:stop], device=device)
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
