"""ICD's instance-conditional decoder: one cross-attention layer over the teacher's tokens."""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


class InstanceDecoder(nn.Module):
    """Cross-attention from instance queries to FPN tokens (no self-attention, no dropout).

    * logits A = (Q W_q / sqrt(d)) (X W_k + P W_p W_k)^T per head, padded tokens at -inf;
    * values V = X W_v (+ bias), split into heads;
    * q' = LN(q + W_o softmax(A) V), q'' = LN(q' + FFN(q')).

    The softmax runs over all tokens of all levels jointly. The B x heads x K x S attention is
    computed in chunks of queries when it would exceed ``chunk_bytes``; chunks are
    re-computed in backward (activation checkpointing), so memory stays bounded in training.

    Args:
        token_channels: C of the tokens (the teacher's FPN width).
        embed_dims: query width and attention width (256).
        num_heads: 8 (head width ``embed_dims / num_heads`` = 32).
        ffn_dims: hidden width of the FFN (1024).
        pos_dims: width of the sine position embedding (256).
        chunk_bytes: memory budget of one chunk of attention logits.
    """

    def __init__(self, token_channels: int, embed_dims: int = 256, num_heads: int = 8,
                 ffn_dims: int = 1024, pos_dims: int = 256,
                 chunk_bytes: int = 256 * 2**20) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by num_heads {num_heads}')
        self.num_heads, self.head_dims = num_heads, embed_dims // num_heads
        self.chunk_bytes = int(chunk_bytes)
        self.pos_proj = nn.Linear(pos_dims, token_channels)
        self.q_proj = nn.Linear(embed_dims, embed_dims)
        self.k_proj = nn.Linear(token_channels, embed_dims)
        self.v_proj = nn.Linear(token_channels, embed_dims)
        self.out_proj = nn.Linear(embed_dims, embed_dims)
        self.norm1 = nn.LayerNorm(embed_dims)
        self.ffn = nn.Sequential(nn.Linear(embed_dims, ffn_dims), nn.ReLU(inplace=True),
                                 nn.Linear(ffn_dims, embed_dims))
        self.norm2 = nn.LayerNorm(embed_dims)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise the input projection (q, k, v) as the release does: Xavier-uniform weights
        and zero biases. With tokens as wide as the queries the three weights are one stacked
        (3 E, E) matrix for the Xavier bound, as PyTorch's ``MultiheadAttention`` in-projection;
        otherwise each is initialised on its own. The other layers keep PyTorch's defaults."""
        e = self.q_proj.weight.shape[0]
        if self.k_proj.weight.shape[1] == e:
            stacked = torch.empty(3 * e, e, device=self.q_proj.weight.device)
            nn.init.xavier_uniform_(stacked)
            for proj, part in zip((self.q_proj, self.k_proj, self.v_proj), stacked.split(e)):
                proj.weight.copy_(part)
        else:
            for proj in (self.q_proj, self.k_proj, self.v_proj):
                nn.init.xavier_uniform_(proj.weight)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.zeros_(proj.bias)

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, N, heads * d) -> (B, heads, N, d)."""
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dims).transpose(1, 2)

    def values(self, tokens: Tensor) -> Tensor:
        """(B, S, C) tokens -> (B, heads, S, d) value projections."""
        return self.split_heads(self.v_proj(tokens))

    def forward(self, queries: Tensor, tokens: Tensor, pos: Tensor, pad_mask: Tensor,
                real: Tensor, temperature: float = 1.0) -> Tuple[Tensor, Tensor, Tensor]:
        """Decode the queries and measure where the real instances look.

        Args:
            queries: (B, K, embed_dims).
            tokens: (B, S, C) the teacher's flattened FPN tokens.
            pos: (B, S, pos_dims) position embeddings (added to the keys only).
            pad_mask: (B, S) True on padded tokens.
            real: (B, K) True for real instances (their attention makes the token weights).
            temperature: T of the token weights ``softmax(A / T)``.

        Returns:
            decoded: (B, K, embed_dims) q''.
            values: (B, heads, S, d) value projections of the tokens (with grad).
            token_weight: (B, heads, S) ``sum over real k of softmax_S(A_k / T)`` (no grad);
                it sums to the number of real instances of each image, per head.
        """
        b, k, _ = queries.shape
        s = tokens.shape[1]
        q, keys, bias = self._queries_keys(queries, tokens, pos, pad_mask)
        vals = self.values(tokens)
        per_query = b * self.num_heads * s * keys.element_size() * 3  # logits, probs, weights
        step = max(1, min(k, self.chunk_bytes // max(per_query, 1)))
        outs, weight = [], keys.new_zeros(b, self.num_heads, s)
        for start in range(0, k, step):
            args = (q[:, :, start:start + step], keys, vals, bias,
                    real[:, start:start + step], temperature)
            if step < k and torch.is_grad_enabled():
                out, w = checkpoint(_attend, *args, use_reentrant=False)
            else:
                out, w = _attend(*args)
            outs.append(out)
            weight = weight + w
        attended = torch.cat(outs, 2).transpose(1, 2).reshape(b, k, -1)  # (B, K, embed)
        x = self.norm1(queries + self.out_proj(attended))
        return self.norm2(x + self.ffn(x)), vals, weight

    def _queries_keys(self, queries: Tensor, tokens: Tensor, pos: Tensor,
                      pad_mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Scaled queries (B, h, K, d), keys (B, h, S, d) and the padding bias (B, 1, 1, S)."""
        b, s = tokens.shape[:2]
        keys = self.split_heads(self.k_proj(tokens + self.pos_proj(pos)))
        bias = torch.zeros(b, 1, 1, s, dtype=keys.dtype, device=keys.device).masked_fill(
            pad_mask[:, None, None, :], float('-inf'))
        q = self.split_heads(self.q_proj(queries)) / math.sqrt(self.head_dims)
        return q, keys, bias

    def attention_logits(self, queries: Tensor, tokens: Tensor, pos: Tensor,
                         pad_mask: Tensor) -> Tensor:
        """The pre-softmax attention logits A that weight the distillation (for inspection).

        Args: as :meth:`forward`.

        Returns:
            (B, heads, K, S): ``(q W_q / sqrt(d)) (x W_k + pos W_p W_k)^T``, -inf on padding.
        """
        q, keys, bias = self._queries_keys(queries, tokens, pos, pad_mask)
        return q @ keys.transpose(-1, -2) + bias


def _attend(q: Tensor, keys: Tensor, vals: Tensor, bias: Tensor, real: Tensor,
            temperature: float) -> Tuple[Tensor, Tensor]:
    """One chunk of queries: q (B, h, k, d), keys/vals (B, h, S, d), bias (B, 1, 1, S),
    real (B, k). Returns softmax(A) V (B, h, k, d) and the chunk's token weights (B, h, S)."""
    logits = q @ keys.transpose(-1, -2) + bias  # (B, h, k, S), pre-softmax A
    out = logits.softmax(-1) @ vals
    with torch.no_grad():
        probs = (logits / temperature).softmax(-1)
        w = (probs * real[:, None, :, None].to(probs.dtype)).sum(2)
    return out, w


def head_layer_norm(values: Tensor) -> Tensor:
    """LayerNorm without affine over each head's d channels: (..., d) -> (..., d)."""
    return F.layer_norm(values, values.shape[-1:])


def weighted_value_mimic(student_values: Tensor, teacher_values: Tensor,
                         token_weight: Tensor, eps: float = 1e-6) -> Tensor:
    """ICD's mimicking loss.

    ``mean over (b, h, c) of sum_s m[b,h,s] (V_s - V_t)^2[b,h,s,c] / max(sum_s m[b,h,s], eps)``
    with both values layer-normalised per head.

    Args:
        student_values: (B, heads, S, d).
        teacher_values: (B, heads, S, d) (treated as a constant).
        token_weight: (B, heads, S) (treated as a constant).
    """
    diff = (head_layer_norm(student_values) - head_layer_norm(teacher_values.detach())) ** 2
    m = token_weight.detach().to(diff.dtype)
    num = (m[..., None] * diff).sum(2)  # (B, heads, d)
    return (num / m.sum(2).clamp(min=eps)[..., None]).mean()


__all__ = ['InstanceDecoder', 'head_layer_norm', 'weighted_value_mimic']
