"""Caption generation for any caption decoder: greedy, sampling and beam search.

``generate(decoder, image_pooled, image_patches, max_new_tokens, strategy, tokenizer)``
starts the decoder's cache on the image, feeds BOS and then each chosen token through
``decoder.step`` (the Mamba decoder's recurrent step, the Transformer's KV cache), and
stops a row at its EOS (``stop_at_eos=False`` runs every row to max_new_tokens: timing).
Rows never interact: a row that stops keeps being fed (and its outputs are replaced by
padding), so the batch keeps its shape and the other rows compute exactly as they would.

Strategies (a name, a mapping with ``name``, or one of these objects):
- ``Greedy()`` ("greedy"): the most likely token each step.
- ``Sampling(temperature, top_k, top_p, seed)`` ("sample"): temperature, then top-k, then
  nucleus (top-p) filtering; draws from a generator seeded with ``seed``, so a seed and a
  batch give the same samples every time.
- ``BeamSearch(num_beams, length_penalty)`` ("beam"): the num_beams best prefixes per row
  by summed log-probability; a beam that ends stays in the set with its score; the row's
  answer is the best by score / length ** length_penalty. With length_penalty 0 a row stops
  as soon as its best beam has ended (no live beam can overtake it).

``guidance`` s (default 1: plain decoding) steers any strategy with classifier-free
guidance: each step scores the tokens with the image (log p_c) and with the null image
(log p_u, what the decoder learnt of the captions' language through ``image_dropout``) and
decodes from log p_u + s (log p_c - log p_u). With s > 1 what the image adds counts more
than the language prior, so a pair of words never seen together in training (a held-out
shape and colour) is not ruled out by the prior alone. Costs a second cache and step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Greedy:
    name = "greedy"


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_k: int = 0            # 0: no top-k filtering
    top_p: float = 1.0        # 1: no nucleus filtering
    seed: int = 0
    name = "sample"

    def __post_init__(self):
        if not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0: off), got {self.top_k!r}")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")


@dataclass(frozen=True)
class BeamSearch:
    num_beams: int = 3
    length_penalty: float = 0.0
    name = "beam"

    def __post_init__(self):
        if isinstance(self.num_beams, bool) or not isinstance(self.num_beams, int) \
                or self.num_beams < 1:
            raise ValueError(f"num_beams (beam width) must be an int >= 1, got {self.num_beams!r}")
        if not isinstance(self.length_penalty, (int, float)) or self.length_penalty < 0:
            raise ValueError(f"length_penalty must be a number >= 0, got {self.length_penalty!r}")


Strategy = Union[Greedy, Sampling, BeamSearch]
STRATEGIES = {"greedy": Greedy, "sample": Sampling, "beam": BeamSearch}


def as_strategy(strategy: Union[str, Mapping, Strategy]) -> Strategy:
    """A strategy object from its name ("greedy", "sample", "beam"), a mapping such as
    {"name": "sample", "top_p": 0.9, "seed": 1}, or a strategy object."""
    if isinstance(strategy, (Greedy, Sampling, BeamSearch)):
        return strategy
    if isinstance(strategy, str):
        name, options = strategy, {}
    elif isinstance(strategy, Mapping):
        options = dict(strategy)
        name = options.pop("name", None)
    else:
        raise TypeError(f"strategy must be a name, a mapping with 'name' or a strategy object, "
                        f"got {type(strategy).__name__}")
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {sorted(STRATEGIES)}")
    try:
        return STRATEGIES[name](**options)
    except TypeError as exc:
        raise ValueError(f"bad options for strategy {name!r}: {exc}") from None


@dataclass
class Generation:
    """tokens (b, t) long: the generated ids, EOS included, pad after it (t <= max_new_tokens,
    BOS not included); lengths (b,): tokens before EOS; finished (b,) bool: the row ended
    with EOS; texts: the decoded captions; scores (b,): beam search's final scores."""

    tokens: Tensor
    lengths: Tensor
    finished: Tensor
    texts: list
    scores: Optional[Tensor] = None


def check_guidance(scale) -> float:
    """The guidance scale as a float; anything but a number >= 0 is a ValueError."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale >= 0:
        raise ValueError(f"guidance must be a number >= 0 (1: no guidance), got {scale!r}")
    return float(scale)


@dataclass
class GuidedCache:
    """The cache of the image (``image``) and of the null image (``null``), row for row."""

    image: object
    null: object

    def select(self, index: Tensor) -> "GuidedCache":
        return GuidedCache(self.image.select(index), self.null.select(index))

    def nbytes(self) -> int:
        return self.image.nbytes() + self.null.nbytes()


class Guided:
    """A decoder seen through classifier-free guidance of scale s: ``start`` reads the image
    and the null image, ``step`` returns log p_u + s (log p_c - log p_u) (b, V)."""

    def __init__(self, decoder, scale: float):
        self.decoder, self.scale = decoder, check_guidance(scale)
        # What the generation loops read of a decoder besides start and step.
        self.embed, self.vocab_size = decoder.embed, decoder.vocab_size

    def start(self, image_pooled: Tensor, image_patches: Tensor, max_new_tokens: int):
        null = self.decoder.null_image(image_pooled, image_patches)
        return GuidedCache(self.decoder.start(image_pooled, image_patches, max_new_tokens),
                           self.decoder.start(*null, max_new_tokens))

    def step(self, tokens: Tensor, cache: GuidedCache) -> Tensor:
        image = F.log_softmax(self.decoder.step(tokens, cache.image).float(), dim=-1)
        null = F.log_softmax(self.decoder.step(tokens, cache.null).float(), dim=-1)
        return null + self.scale * (image - null)


def _check_max_new_tokens(max_new_tokens) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")


@torch.no_grad()
def generate(decoder, image_pooled: Tensor, image_patches: Tensor, max_new_tokens: int,
             strategy: Union[str, Mapping, Strategy] = "greedy", tokenizer=None,
             stop_at_eos: bool = True, guidance: float = 1.0) -> Generation:
    """Captions for the images whose tower gave image_pooled (b, wi), image_patches
    (b, p, wi). ``tokenizer`` supplies bos_id, eos_id, pad_id and decode (e.g.
    ``ssm.data.ByteTokenizer``). guidance: classifier-free guidance scale (1: none)."""
    _check_max_new_tokens(max_new_tokens)
    strategy = as_strategy(strategy)
    scale = check_guidance(guidance)
    stepper = decoder if scale == 1 else Guided(decoder, scale)
    for attribute in ("bos_id", "eos_id", "pad_id", "decode"):
        if not hasattr(tokenizer, attribute):
            raise TypeError(f"tokenizer must have {attribute} (e.g. ssm.data.ByteTokenizer), "
                            f"got {type(tokenizer).__name__}")
    was_training = decoder.training
    decoder.eval()
    try:
        cache = stepper.start(image_pooled, image_patches, max_new_tokens)
        run = _beam_search if isinstance(strategy, BeamSearch) else _one_path
        tokens, lengths, finished, scores = run(stepper, cache, image_pooled.shape[0],
                                                max_new_tokens, strategy, tokenizer, stop_at_eos)
    finally:
        decoder.train(was_training)
    texts = [tokenizer.decode(row[:n]) for row, n in zip(tokens.tolist(), lengths.tolist())]
    return Generation(tokens, lengths, finished, texts, scores)


def _choose(logits: Tensor, strategy, generator) -> Tensor:
    """The next token (b,) from logits (b, V) under greedy or sampling."""
    if isinstance(strategy, Greedy):
        return logits.argmax(-1)
    logits = logits.float() / strategy.temperature
    if strategy.top_k and strategy.top_k < logits.shape[-1]:
        kth = logits.topk(strategy.top_k, dim=-1).values[:, -1:]            # (b, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if strategy.top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the ones ranked above it already hold top_p of the mass; the
        # most likely token always stays.
        drop_sorted = probs.cumsum(-1) - probs >= strategy.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def _one_path(decoder, cache, b, max_new_tokens, strategy, tokenizer, stop_at_eos):
    """Greedy or sampling: one sequence per row."""
    device = decoder.embed.weight.device
    generator = None
    if isinstance(strategy, Sampling):
        generator = torch.Generator(device=device).manual_seed(strategy.seed)
    pad, eos = tokenizer.pad_id, tokenizer.eos_id
    out = torch.full((b, max_new_tokens), pad, dtype=torch.long, device=device)
    lengths = torch.zeros(b, dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    token = torch.full((b,), tokenizer.bos_id, dtype=torch.long, device=device)
    steps = 0
    for t in range(max_new_tokens):
        chosen = _choose(decoder.step(token, cache), strategy, generator)
        out[:, t] = torch.where(done, pad, chosen)
        ended = chosen == eos if stop_at_eos else torch.zeros_like(done)
        lengths += (~done & ~ended).long()
        done |= ended
        token = out[:, t]  # a finished row is fed padding: its outputs are discarded
        steps = t + 1
        if stop_at_eos and bool(done.all()):
            break
    return out[:, :steps], lengths, done, None


def _beam_search(decoder, cache, b, max_new_tokens, strategy, tokenizer, stop_at_eos):
    """num_beams prefixes per row, kept in the cache as rows b * k (row-major)."""
    k, alpha = strategy.num_beams, strategy.length_penalty
    device = decoder.embed.weight.device
    pad, eos = tokenizer.pad_id, tokenizer.eos_id
    cache = cache.select(torch.arange(b, device=device).repeat_interleave(k))
    rows = torch.arange(b, device=device)[:, None] * k                    # (b, 1)
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live beam at first, or the k beams would be k copies
    seqs = torch.full((b, k, max_new_tokens), pad, dtype=torch.long, device=device)
    lengths = torch.zeros(b, k, dtype=torch.long, device=device)
    finished = torch.zeros(b, k, dtype=torch.bool, device=device)
    row_done = torch.zeros(b, dtype=torch.bool, device=device)
    token = torch.full((b * k,), tokenizer.bos_id, dtype=torch.long, device=device)
    vocab = decoder.vocab_size
    # A frozen beam (ended, or its row is done) continues with padding alone, at no cost:
    # its score stands.
    pad_only = torch.full((vocab,), float("-inf"), device=device)
    pad_only[pad] = 0.0
    steps = 0
    for t in range(max_new_tokens):
        logp = F.log_softmax(decoder.step(token, cache).float(), dim=-1)   # (b * k, V)
        logp = logp.view(b, k, vocab)
        frozen = finished | row_done[:, None]                              # (b, k)
        logp = torch.where(frozen[..., None], pad_only, logp)
        scores, flat = (scores[..., None] + logp).view(b, k * vocab).topk(k, dim=1)
        beam, chosen = flat // vocab, flat % vocab                         # (b, k) each
        seqs = seqs.gather(1, beam[..., None].expand_as(seqs))
        seqs[:, :, t] = chosen
        was_frozen = frozen.gather(1, beam)
        ended = ~was_frozen & (chosen == eos) if stop_at_eos else torch.zeros_like(was_frozen)
        lengths = lengths.gather(1, beam) + (~was_frozen & ~ended).long()
        finished = finished.gather(1, beam) | ended
        cache = cache.select((rows + beam).flatten())
        token = chosen.flatten()
        steps = t + 1
        if stop_at_eos:
            # topk sorts, so beam 0 is the best; with no length penalty nothing overtakes it.
            row_done |= finished.all(1) | (finished[:, 0] if alpha == 0 else False)
            if bool(row_done.all()):
                break
    final = scores / lengths.clamp(min=1).float() ** alpha if alpha else scores
    best = final.argmax(1)                                                 # (b,)
    pick = torch.arange(b, device=device)
    return (seqs[pick, best, :steps], lengths[pick, best], finished[pick, best],
            final[pick, best])
