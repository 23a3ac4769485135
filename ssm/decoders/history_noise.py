"""Word substitution in the teacher-forced history of a caption decoder.

Under teacher forcing a decoder predicts each word from the image *and* the words before
it. On the built-in scenes that history is a shortcut with a cost: the decoder learns which
shape words follow which colour words in training ("green" is never followed by "cross"),
and at test time that learned exclusion overrules the image. ``ssm.eval.composition``
measures it: the captioning preset's decoder, teacher-forced on single-object scenes of
held-out (shape, colour) pairs, picks the true shape 8% of the time after the true colour
word and 92% after a colour word trained with every shape (README, "Captioning").

``substitute_words`` replaces each word of the input history, with probability ``rate``, by
a word drawn from the batch's captions (so by the corpus' word frequencies), and removes
the substituted word's own tokens from the loss: the decoder is never taught to say the
wrong word, only to predict everything after it from the image when the history can be
wrong. No image changes, so no image of an unseen pair is ever trained; the noisy history
may put two words side by side that no caption does. It is word dropout (Bowman et al.,
2016) with real words in place of an unknown token.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["substitute_words", "check_word_noise"]

_ATTEMPTS = 8  # draws for a substitute that forms no avoided pair


def check_word_noise(rate) -> float:
    """The substitution rate as a float in [0, 1); a named error otherwise."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ValueError(f"caption_word_noise must be a number in [0, 1), got {rate!r}")
    return float(rate)


def _words(row: list[int], separator: int) -> list[list[int]]:
    """Split the caption tokens between BOS and EOS at ``separator`` into words; separators
    are dropped, empty words (two separators in a row) kept so the row re-joins exactly."""
    words, current = [], []
    for token in row:
        if token == separator:
            words.append(current)
            current = []
        else:
            current.append(token)
    words.append(current)
    return words


@torch.no_grad()
def substitute_words(tokens: Tensor, mask: Tensor, rate: float, separator: int,
                     generator: Optional[torch.Generator] = None,
                     avoid: frozenset = frozenset()) -> tuple[Tensor, Tensor, Tensor]:
    """Noisy teacher-forcing input for right-padded captions.

    tokens, mask: (b, l) long / bool, each row BOS, caption tokens, EOS, then padding.
    rate: probability that each word is replaced; separator: the token id between words
    (32, the space byte, for ``ByteTokenizer``); generator: a CPU generator for the draws.
    avoid: word pairs (left, right), each word a tuple of token ids, that the noise must
    never put side by side; a substitute that would is drawn again (up to
    ``_ATTEMPTS`` times, then the word stays). Pairs the captions themselves hold are kept.

    Returns (noisy_tokens, noisy_mask, counted), each (b, l') with l' >= l the longest
    noisy row (a substitute may be longer than the word it replaces): the rows with their
    words substituted, their mask, and ``noisy_mask`` with the substituted words' own
    positions False. Give the decoder ``noisy_tokens, noisy_mask`` and the loss
    ``noisy_tokens, counted`` (``ssm.losses.lm_loss`` ignores targets where its mask is
    False). Rows are filled past their end with their EOS id (nothing reads it).
    """
    rate = check_word_noise(rate)
    if tokens.shape != mask.shape or tokens.dim() != 2:
        raise ValueError(f"tokens and mask must both have shape (b, l), got "
                         f"{tuple(tokens.shape)} and {tuple(mask.shape)}")
    if rate == 0:
        return tokens, mask, mask
    b, l = tokens.shape
    lengths = mask.sum(1).tolist()
    rows = tokens.cpu().tolist()
    split = [_words(rows[i][1:lengths[i] - 1], separator) for i in range(b)]
    pool = [tuple(word) for words in split for word in words if word]
    if not pool:
        return tokens, mask, mask
    draws = torch.rand(b, l, generator=generator).tolist()     # at most l words a row
    picks = torch.randint(len(pool), (b, l, _ATTEMPTS), generator=generator).tolist()
    noisy_rows, kept_rows = [], []
    for i, words in enumerate(split):
        out, keep = [rows[i][0]], [True]                         # BOS, never a target
        previous = None                                          # the word written last
        for k, word in enumerate(words):
            if k:
                out.append(separator)
                keep.append(True)
            substitute = None
            if word and draws[i][k] < rate:
                following = tuple(words[k + 1]) if k + 1 < len(words) else None
                substitute = next((pool[p] for p in picks[i][k]
                                   if (previous, pool[p]) not in avoid
                                   and (pool[p], following) not in avoid), None)
            if substitute is not None:
                word = substitute
                keep.extend([False] * len(word))                 # its own tokens: no loss
            else:
                keep.extend([True] * len(word))
            out.extend(word)
            previous = tuple(word)
        out.append(rows[i][lengths[i] - 1])                      # EOS
        keep.append(True)
        noisy_rows.append(out)
        kept_rows.append(keep)
    width = max(l, max(map(len, noisy_rows)))
    # Past each row's end: its EOS id as filler (a valid id; nothing reads it).
    noisy = torch.tensor([r + [r[-1]] * (width - len(r)) for r in noisy_rows])
    counted = torch.tensor([k + [False] * (width - len(k)) for k in kept_rows])
    noisy_mask = torch.arange(width)[None, :] < torch.tensor([len(r) for r in noisy_rows])[:, None]
    return noisy.to(tokens.device), noisy_mask.to(mask.device), counted.to(mask.device)
