"""Text encoders: causal Mamba, bidirectional Mamba and a CLIP-style Transformer.

All take right-padded byte tokens and their mask and return one feature per caption:
    forward(tokens (b, l) long, mask (b, l) bool) -> (b, width)
``forward_tokens`` gives the per-token states (b, l, width) after the final norm (for the
ITM head and, on causal encoders, the LM head: ``lm_logits``); ``pool`` turns them into
(b, width). Pretrained Mamba LMs load into ``MambaTextEncoder`` (ssm.encoders.pretrained).
Padding never changes a real token's state: the Mamba scans stop at each row's length,
and attention is causal.
"""
from __future__ import annotations

from typing import Union

import torch
from torch import nn

from ssm.modules import Mamba, RMSNorm, TransformerBlock


def check_tokens(tokens, mask, vocab_size: int) -> torch.Tensor:
    """Validate right-padded tokens (b, l) and their bool mask (b, l); returns the lengths
    (b,) long. Every row needs a real token; ids must lie in [0, vocab_size)."""
    if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"tokens must be an integer tensor (b, l), got "
                        f"{getattr(tokens, 'dtype', type(tokens).__name__)}")
    if tokens.dim() != 2 or tokens.shape[1] == 0:
        raise ValueError(f"tokens must have shape (b, l) with l >= 1, got {tuple(tokens.shape)}")
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(tokens.shape):
        raise ValueError(f"mask must have the tokens' shape {tuple(tokens.shape)}, got "
                         f"{tuple(getattr(mask, 'shape', ()))}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"token ids must lie in [0, vocab_size={vocab_size}), "
                         f"got values in [{lo}, {hi}]")
    lengths = mask.sum(1)
    if int(lengths.min()) == 0:
        empty = torch.nonzero(lengths == 0).flatten().tolist()
        raise ValueError(f"mask has all-padding rows {empty}: every caption needs a token")
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    if not torch.equal(mask, positions[None, :] < lengths[:, None]):
        raise ValueError("mask must be right-padded: True on a prefix of each row")
    return lengths


class TextEncoder(nn.Module):
    """Shared checks, embedding and pooling. Subclasses define ``_states``."""

    causal: bool = True  # whether a token's state depends only on the tokens before it

    def __init__(self, vocab_size: int, width: int):
        super().__init__()
        if vocab_size < 1 or width < 1:
            raise ValueError(f"vocab_size and width must be >= 1, got {vocab_size}, {width}")
        self.vocab_size, self.width = vocab_size, width
        self.embed = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens (b, l) long, mask (b, l) bool -> (b, width)."""
        return self.pool(self.forward_tokens(tokens, mask), mask)

    def forward_tokens(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-token states (b, l, width); rows at padded positions carry no meaning."""
        lengths = self.check_tokens(tokens, mask)
        return self._states(tokens, lengths)

    def pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The last real token's state (causal encoders: it has read the whole caption)."""
        return last_pool(states, mask)

    def lm_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Next-token logits (b, l, vocab) from states (b, l, width): the embedding, tied."""
        return states @ self.embed.weight.t()

    def check_tokens(self, tokens, mask) -> torch.Tensor:
        """Validate a batch; returns the lengths (b,) long."""
        return check_tokens(tokens, mask, self.vocab_size)

    def _states(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def last_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """states (b, l, w) -> (b, w): each row's last real token (mask right-padded)."""
    last = mask.sum(1) - 1
    return states[torch.arange(states.shape[0], device=states.device), last]


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """states (b, l, w) -> (b, w): the mean over each row's real tokens."""
    weights = mask.to(states.dtype)[..., None]                          # (b, l, 1)
    return (states * weights).sum(1) / weights.sum(1)


POOLING = {"last": last_pool, "mean": mean_pool}


def _mamba_layers(depth, width, d_state, d_conv, expand, backend, **mixer):
    """``depth`` Mamba mixers of one width, for a residual stack."""
    return nn.ModuleList(Mamba(width, d_state, d_conv, expand, backend=backend, **mixer)
                         for _ in range(depth))


class MambaTextEncoder(TextEncoder):
    """Causal Mamba stack: embed -> [x + Mamba(RMSNorm(x))] * depth -> RMSNorm: the
    backbone of a Mamba LM (mamba-ssm's MixerModel, transformers' MambaModel).

    ``pooling``: "last" (the last real token, default) or "mean" (the real tokens' mean).
    ``dt_rank``, ``conv_bias``, ``bias`` and ``norm_eps`` are the mixers' and norms'
    settings, as a pretrained LM's config gives them. ``untied_lm_head`` adds an output
    layer of its own; by default ``lm_logits`` reads through the embedding.
    """

    def __init__(self, vocab_size: int = 259, width: int = 256, depth: int = 4,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, backend: str = "auto",
                 pooling: str = "last", dt_rank: Union[int, str] = "auto",
                 conv_bias: bool = True, bias: bool = False, norm_eps: float = 1e-5,
                 untied_lm_head: bool = False):
        super().__init__(vocab_size, width)
        if pooling not in POOLING:
            raise ValueError(f"pooling must be one of {sorted(POOLING)}, got {pooling!r}")
        self.pooling = pooling
        self.norms = nn.ModuleList(RMSNorm(width, norm_eps) for _ in range(depth))
        self.mixers = _mamba_layers(depth, width, d_state, d_conv, expand, backend,
                                    dt_rank=dt_rank, conv_bias=conv_bias, bias=bias)
        self.norm_f = RMSNorm(width, norm_eps)
        self.lm_head = nn.Linear(width, vocab_size, bias=False) if untied_lm_head else None

    def _states(self, tokens, lengths):
        h = self.embed(tokens)
        for norm, mixer in zip(self.norms, self.mixers):
            h = h + mixer(norm(h), seq_lens=lengths)
        return self.norm_f(h)

    def pool(self, states, mask):
        return POOLING[self.pooling](states, mask)

    def lm_logits(self, states):
        if self.lm_head is None:
            return super().lm_logits(states)
        return self.lm_head(states)


class BiMambaTextEncoder(TextEncoder):
    """Bidirectional Mamba: each layer adds a forward and a reverse mixer's outputs; the
    reverse one starts at each caption's true end. Mean-pools the real tokens."""

    causal = False

    def __init__(self, vocab_size: int = 259, width: int = 256, depth: int = 2,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, backend: str = "auto"):
        super().__init__(vocab_size, width)
        self.norms = nn.ModuleList(RMSNorm(width) for _ in range(depth))
        self.forward_mixers = _mamba_layers(depth, width, d_state, d_conv, expand, backend)
        self.reverse_mixers = _mamba_layers(depth, width, d_state, d_conv, expand, backend)
        self.norm_f = RMSNorm(width)

    def _states(self, tokens, lengths):
        h = self.embed(tokens)
        for norm, fwd, rev in zip(self.norms, self.forward_mixers, self.reverse_mixers):
            x = norm(h)
            h = h + fwd(x, seq_lens=lengths) + rev(x, seq_lens=lengths, reverse=True)
        return self.norm_f(h)

    def pool(self, states, mask):
        return mean_pool(states, mask)


class TransformerTextEncoder(TextEncoder):
    """CLIP's text tower: token + learned position embeddings, causal pre-norm blocks,
    final LayerNorm; pools at the end-of-text token (the last real token)."""

    def __init__(self, vocab_size: int = 259, width: int = 256, depth: int = 2, heads: int = 4,
                 max_length: int = 1024, mlp_ratio: float = 4.0):
        super().__init__(vocab_size, width)
        self.max_length = max_length
        self.pos_embed = nn.Parameter(torch.randn(max_length, width) * 0.01)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, mlp_ratio)
                                    for _ in range(depth))
        self.norm_f = nn.LayerNorm(width)

    def _states(self, tokens, lengths):
        l = tokens.shape[1]
        if l > self.max_length:
            raise ValueError(f"tokens have length {l} > max_length={self.max_length} of this "
                             "encoder's position table")
        h = self.embed(tokens) + self.pos_embed[:l]
        for block in self.blocks:
            h = block(h, causal=True)
        return self.norm_f(h)

