"""Next-token cross-entropy fused with the output projection, in row chunks.

A plain causal-LM loss materialises the logits of every position, ``[tokens, vocab]`` in
fp32 (for the tiny preset 2,048 x 50,304 floats, 412 MB), then the same again for their
gradient: memory traffic, not arithmetic, is most of a small model's step. This computes,
chunk by chunk of target rows, the logits, their log-sum-exp, the loss and, in the same
pass, the gradients of the summed loss with respect to the hidden states and the
projection (softmax minus one-hot), so no full logits tensor ever exists. Rows without a
target (-100: EOS padding, the last position) are dropped before any matmul: they carry
neither loss nor gradient. The maths is the plain path's; only float rounding differs (the
bench compares the losses with transformers.Trainer's), and the chunk order is fixed, so the
same machine gives the same result.
"""

from __future__ import annotations

import torch

IGNORE = -100
CHUNK_BYTES = 128 * 2**20  # fp32 logits per chunk (~650 rows of a 50,304 vocab): wide enough for fast GEMMs


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, mm_dtype):
        needs = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        keep = (targets != IGNORE).nonzero().squeeze(1)
        h_all, t_all = hidden.index_select(0, keep), targets.index_select(0, keep)
        w = weight.to(mm_dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_kept = torch.empty_like(h_all, dtype=torch.float32) if needs else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if needs else None
        for start in range(0, len(keep), chunk):
            h, t = h_all[start: start + chunk].to(mm_dtype), t_all[start: start + chunk]
            logits = (h @ w.T).float()
            target = logits.gather(1, t[:, None]).squeeze(1)
            # log-sum-exp with one exp pass, in place, whose result is also the softmax's
            top = logits.amax(dim=1, keepdim=True)
            probs = logits.sub_(top).exp_()
            norm = probs.sum(dim=1)
            total += (top.squeeze(1) + norm.log() - target).sum()
            if needs:  # d(sum loss)/d(logits) = softmax - one_hot, in place of the logits
                probs.div_(norm[:, None])
                probs[torch.arange(len(t), device=t.device), t] -= 1.0
                probs = probs.to(mm_dtype)
                grad_kept[start: start + chunk] = probs @ w
                grad_w.addmm_(probs.T, h)
        if needs:
            grad_h = torch.zeros_like(hidden, dtype=torch.float32).index_copy_(0, keep, grad_kept)
            ctx.save_for_backward(grad_h.to(hidden.dtype), grad_w.to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None, None, None


def linear_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                             mm_dtype: torch.dtype = torch.float32, chunk: int | None = None) -> torch.Tensor:
    """sum over rows with a target of cross_entropy(hidden @ weight.T, targets).

    hidden [rows, d], weight [vocab, d] (a bias-free output projection), targets [rows]
    (-100: no loss). mm_dtype: the matmuls' dtype (the autocast dtype on GPU).
    """
    if chunk is None:
        chunk = max(16, CHUNK_BYTES // (4 * weight.shape[0]) // 16 * 16)
    return _LinearCrossEntropy.apply(hidden, weight, targets, chunk, mm_dtype)


def supports(model) -> bool:
    """A causal LM whose logits are exactly base_model(...) @ output_embeddings.weight.T."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return (getattr(getattr(model, "config", None), "model_type", None) == "gpt_neox"
            and isinstance(head, torch.nn.Linear) and head.bias is None)
