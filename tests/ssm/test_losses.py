"""ssm.losses: hand-computed values, the properties each loss is chosen for, input errors, and a
real two-process gloo run checking the distributed losses against the single-process ones."""
import math
import os
import socket
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ssm.losses import (cosine_loss, gather_with_grad, itc_loss, itm_loss, lm_loss,
                        sample_hard_negatives, siglip_loss)

F64 = torch.float64
# Unit rows chosen so every dot product is a short decimal: img @ txt.T = [[0.6, 1], [0.8, 0]].
IMG = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
TXT = torch.tensor([[0.6, 0.8], [1.0, 0.0]], dtype=F64)


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=F64), dim=-1)


def _scalar(value):
    return torch.tensor(value, dtype=F64)


# ---------------------------------------------------------------- hand-computed values

def test_itc_hand_computed():
    s = 3.0  # logit_scale = ln 3

    def nll(target, other):  # two-way softmax cross-entropy
        return -math.log(math.exp(target) / (math.exp(target) + math.exp(other)))

    per_image = nll(0.6 * s, 1.0 * s) + nll(0.0 * s, 0.8 * s)  # image rows: [0.6, 1], [0.8, 0]
    per_text = nll(0.6 * s, 0.8 * s) + nll(0.0 * s, 1.0 * s)   # text rows: [0.6, 0.8], [1, 0]
    expected = (per_image / 2 + per_text / 2) / 2
    assert itc_loss(IMG, TXT, _scalar(math.log(s))).item() == pytest.approx(expected, rel=1e-12)


def test_siglip_hand_computed():
    # scale 3, bias -1: logits = [[0.8, 2.0], [1.4, -1.0]]; positives on the diagonal.
    softplus = lambda z: math.log(1 + math.exp(z))  # noqa: E731  (-logsigmoid(x) = softplus(-x))
    expected = (softplus(-0.8) + softplus(2.0) + softplus(1.4) + softplus(-(-1.0))) / 2
    got = siglip_loss(IMG, TXT, _scalar(math.log(3.0)), _scalar(-1.0))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_cosine_hand_computed():
    # cos = 0.6 and 0 on the two pairs.
    assert cosine_loss(IMG, TXT).item() == pytest.approx((0.4 ** 2 + 1.0 ** 2) / 2, rel=1e-12)
    # Unnormalised inputs are fine: (2, 0) vs (3, 3) is 45 degrees.
    got = cosine_loss(torch.tensor([[2.0, 0.0]], dtype=F64), torch.tensor([[3.0, 3.0]], dtype=F64))
    assert got.item() == pytest.approx((1 - 1 / math.sqrt(2)) ** 2, rel=1e-12)


def test_lm_hand_computed():
    logits = torch.tensor([[[1, 2, 0], [0, 0, 3], [5, 5, 5]],
                           [[0, 1, 0], [9, 9, 9], [9, 9, 9]]], dtype=F64)
    tokens = torch.tensor([[0, 1, 2], [2, 0, 7]])  # 7: a pad id outside the vocabulary
    mask = torch.tensor([[True, True, True], [True, True, False]])
    e = math.e
    terms = [-math.log(e ** 2 / (e + e ** 2 + 1)),  # seq 0, t=0 -> token 1
             -math.log(e ** 3 / (2 + e ** 3)),      # seq 0, t=1 -> token 2
             -math.log(1 / (2 + e))]                # seq 1, t=0 -> token 0
    # A mean over the three counted targets, not over per-sequence means.
    assert lm_loss(logits, tokens, mask).item() == pytest.approx(sum(terms) / 3, rel=1e-12)


def test_lm_label_smoothing_hand_computed():
    """(1 - eps) * CE(target) + eps * mean over the vocabulary of -log p (BLIP: eps = 0.1)."""
    logits = torch.tensor([[[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]], dtype=F64)
    tokens, mask = torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.bool)
    logp = logits[0, 0].log_softmax(-1)
    expected = 0.9 * -logp[1] + 0.1 * -logp.mean()
    assert lm_loss(logits, tokens, mask, label_smoothing=0.1).item() == pytest.approx(
        expected.item(), rel=1e-12)
    with pytest.raises(ValueError, match="label_smoothing"):
        lm_loss(logits, tokens, mask, label_smoothing=1.0)


def test_lm_no_counted_targets_is_zero_with_graph():
    logits = torch.randn(2, 1, 5, requires_grad=True)
    loss = lm_loss(logits, torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0 and torch.count_nonzero(logits.grad) == 0


def test_itm_hand_computed():
    pos = torch.tensor([[0.0, 1.0]], dtype=F64)
    neg = torch.tensor([[2.0, 0.0], [0.0, 0.0]], dtype=F64)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-2)) + math.log(2)) / 3
    assert itm_loss(pos, neg).item() == pytest.approx(expected, rel=1e-12)
    # Labels follow the argument, not the row position: swapping the roles changes the loss.
    assert itm_loss(neg, pos).item() != pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------- properties

@pytest.mark.parametrize("seed", range(3))
def test_itc_prefers_matching_pairs_and_is_symmetric(seed):
    img, txt = _unit(8, 16, seed=seed), _unit(8, 16, seed=seed + 100)
    scale = _scalar(math.log(10.0))
    assert itc_loss(img, img, scale) < itc_loss(img, img.roll(1, dims=0), scale)
    torch.testing.assert_close(itc_loss(img, txt, scale), itc_loss(txt, img, scale),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("b", [2, 5])
def test_cosine_admits_collapse_but_itc_does_not(b):
    exact = torch.full((b, 4), 0.5, dtype=F64)  # a unit vector whose self-cosine is exactly 1
    assert cosine_loss(exact, exact).item() == 0.0
    collapsed = _unit(1, 8).expand(b, 8)
    assert cosine_loss(collapsed, collapsed).item() == pytest.approx(0.0, abs=1e-12)
    for log_scale in (0.0, math.log(100.0)):
        assert itc_loss(collapsed, collapsed, _scalar(log_scale)).item() == pytest.approx(
            math.log(b), rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(2, 6), st.integers(2, 7), st.integers(0, 2 ** 16))
def test_lm_ignores_padding(b, l, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, l + 1, (b,), generator=g)
    lengths[0] = l  # at least one counted target
    mask = torch.arange(l)[None, :] < lengths[:, None]
    logits = torch.randn(b, l, vocab, generator=g, dtype=F64)
    tokens = torch.randint(0, vocab, (b, l), generator=g)
    loss = lm_loss(logits, tokens, mask)

    # logits[:, t] is unused unless target t + 1 is a real token.
    unused = torch.ones(b, l, dtype=torch.bool)
    unused[:, :-1] = ~mask[:, 1:]
    noisy_logits = torch.where(unused[..., None], 1e3 * torch.randn_like(logits), logits)
    noisy_tokens = torch.where(mask, tokens, torch.full_like(tokens, 10 ** 6))
    assert torch.equal(lm_loss(noisy_logits, noisy_tokens, mask), loss)
    # ...while a used position does move it, so the comparison above can fail.
    moved = logits.clone()
    moved[0, 0, tokens[0, 1]] += 1.0
    assert lm_loss(moved, tokens, mask) < loss


def test_hard_negatives_never_pick_the_diagonal():
    g = torch.Generator().manual_seed(0)
    for b, calls in ((6, 200), (300, 10)):
        sim = torch.randn(b, b, generator=g) + 50 * torch.eye(b)  # positives dominate softmax
        draws = torch.stack([sample_hard_negatives(sim, generator=g) for _ in range(calls)])
        assert draws.dtype == torch.long and draws.shape == (calls, b)
        assert not (draws == torch.arange(b)).any()
    assert set(draws.unique().tolist()) == set(range(b))  # every column is reachable
    assert sample_hard_negatives(torch.zeros(2, 2)).tolist() == [1, 0]


def test_hard_negatives_follow_softmax_weights():
    # Many independent 4 x 4 problems per call: a block-diagonal sim whose off-block entries
    # are so negative that their softmax weight is exactly 0.
    block = torch.zeros(4, 4)
    block[0] = torch.tensor([9.0, 0.0, math.log(2), math.log(3)])  # off-diagonal odds 1 : 2 : 3
    block[1, 3] = 10.0                                             # one clearly hardest negative
    blocks = 500
    inside = torch.block_diag(*[torch.ones(4, 4)] * blocks).bool()
    sim = torch.block_diag(*[block] * blocks).masked_fill(~inside, -1e4).requires_grad_()
    g = torch.Generator().manual_seed(1)
    draws = torch.cat([sample_hard_negatives(sim, generator=g) for _ in range(6)])
    assert not draws.requires_grad
    rows = torch.arange(len(draws)) % (4 * blocks)
    offset = draws - rows // 4 * 4  # column within the row's own block
    assert ((offset >= 0) & (offset < 4)).all()
    first, second = offset[rows % 4 == 0], offset[rows % 4 == 1]
    freq = torch.bincount(first, minlength=4).double() / len(first)
    torch.testing.assert_close(freq, torch.tensor([0, 1 / 6, 2 / 6, 3 / 6], dtype=F64),
                               rtol=0, atol=0.03)
    assert (second == 3).double().mean() > 0.99


def test_gather_without_distributed_is_identity():
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x


# ---------------------------------------------------------------- errors

def _bad_calls():
    v, s = torch.randn(2, 3), torch.tensor(0.0)
    logits, tokens, mask = torch.randn(2, 4, 5), torch.zeros(2, 4, dtype=torch.long), \
        torch.ones(2, 4, dtype=torch.bool)
    cases = [
        ("itc batch", lambda: itc_loss(v, torch.randn(3, 3), s), ValueError, "text_features"),
        ("itc 1-D", lambda: itc_loss(torch.randn(3), v, s), ValueError, "image_features"),
        ("itc list", lambda: itc_loss([[1.0]], v, s), TypeError, "image_features"),
        ("itc float scale", lambda: itc_loss(v, v, 1.0), TypeError, "logit_scale"),
        ("itc scale shape", lambda: itc_loss(v, v, torch.zeros(1)), ValueError, "logit_scale"),
        ("itc int", lambda: itc_loss(v.long(), v.long(), s), TypeError, "image_features"),
        ("siglip bias", lambda: siglip_loss(v, v, s, torch.zeros(2)), ValueError, "logit_bias"),
        ("siglip 3-D", lambda: siglip_loss(v, v[None], s, s), ValueError, "text_features"),
        ("cosine width", lambda: cosine_loss(v, torch.randn(2, 4)), ValueError, "text_features"),
        ("lm logits", lambda: lm_loss(logits[0], tokens, mask), ValueError, "logits"),
        ("lm tokens", lambda: lm_loss(logits, tokens[:, :3], mask), ValueError, "tokens"),
        ("lm mask", lambda: lm_loss(logits, tokens, mask[:1]), ValueError, "mask"),
        ("lm token dtype", lambda: lm_loss(logits, tokens.float(), mask), TypeError, "tokens"),
        ("lm mask dtype", lambda: lm_loss(logits, tokens, mask.long()), TypeError, "mask"),
        ("lm mask list", lambda: lm_loss(logits, tokens, [[True]]), TypeError, "mask"),
        ("sim not square", lambda: sample_hard_negatives(torch.randn(3, 4)), ValueError, "sim"),
        ("sim b=1", lambda: sample_hard_negatives(torch.randn(1, 1)), ValueError, "sim"),
        ("sim list", lambda: sample_hard_negatives([[0.0, 1.0]]), TypeError, "sim"),
        ("itm pos", lambda: itm_loss(torch.randn(3), torch.randn(2, 2)), ValueError, "pos_logits"),
        ("itm neg", lambda: itm_loss(torch.randn(2, 2), torch.randn(2, 3)), ValueError,
         "neg_logits"),
        ("gather list", lambda: gather_with_grad([1.0]), TypeError, "x"),
    ]
    return [pytest.param(*case[1:], id=case[0]) for case in cases]


@pytest.mark.parametrize("call, exc, name", _bad_calls())
def test_bad_inputs_raise(call, exc, name):
    with pytest.raises(exc, match=rf"\b{name}\b"):
        call()


# ---------------------------------------------------------------- two real processes (gloo)

WORLD, B_LOCAL, WIDTH = 2, 3, 4
LOG_SCALE, BIAS = math.log(5.0), -2.0


def _full_batch():
    return _unit(WORLD * B_LOCAL, WIDTH, seed=7), _unit(WORLD * B_LOCAL, WIDTH, seed=8)


def _loss_and_grads(kind, img, txt):
    """Loss and its gradients w.r.t. (img, txt, logit_scale, logit_bias) on whatever is local."""
    img, txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
    scale, bias = _scalar(LOG_SCALE).requires_grad_(), _scalar(BIAS).requires_grad_()
    loss = itc_loss(img, txt, scale) if kind == "itc" else siglip_loss(img, txt, scale, bias)
    loss.backward()
    bias_grad = bias.grad if bias.grad is not None else torch.zeros((), dtype=F64)
    return {"loss": loss.detach(), "img": img.grad, "txt": txt.grad, "scale": scale.grad,
            "bias": bias_grad}


def _gather_weights(rank):
    return torch.randn(WORLD * B_LOCAL, 2, generator=torch.Generator().manual_seed(rank),
                       dtype=F64)


def _ddp_worker(rank, port, out_dir):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    # The timeout bounds every collective, so a rank that dies cannot leave the other blocked.
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=20))
    try:
        rows = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
        img, txt = _full_batch()
        out = {kind: _loss_and_grads(kind, img[rows], txt[rows]) for kind in ("itc", "siglip")}
        # Different weights per rank, so the backward must really sum over ranks.
        x = torch.full((B_LOCAL, 2), float(rank), dtype=F64, requires_grad=True)
        gathered = gather_with_grad(x)
        (gathered * _gather_weights(rank)).sum().backward()
        out["gather"] = {"value": gathered.detach(), "grad": x.grad}
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_ranks(out_dir, limit_s=60.0):
    ctx = mp.spawn(_ddp_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + limit_s
    try:
        while not ctx.join(timeout=1.0):  # re-raises a worker's exception
            if time.monotonic() > deadline:
                pytest.fail(f"distributed workers still running after {limit_s} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join()
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return _run_two_ranks(tmp_path_factory.mktemp("ddp"))


@pytest.mark.parametrize("kind", ["itc", "siglip"])
def test_distributed_matches_single_process(ranks, kind):
    img, txt = _full_batch()
    full = _loss_and_grads(kind, img, txt)
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # noqa: E731
    close(torch.stack([r[kind]["loss"] for r in ranks]).mean(), full["loss"])
    for rank, r in enumerate(ranks):
        rows = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
        # Each rank's own rows get world x the single-process gradient; DDP divides it out.
        close(r[kind]["img"], WORLD * full["img"][rows])
        close(r[kind]["txt"], WORLD * full["txt"][rows])
    # Parameters that are not gathered: DDP's average of the per-rank gradients.
    for p in ("scale", "bias"):
        close(torch.stack([r[kind][p] for r in ranks]).mean(), full[p])
    # Guard against a vacuous pass: the ranks saw different data.
    assert not torch.allclose(ranks[0][kind]["loss"], ranks[1][kind]["loss"])


def test_distributed_gather_values_and_gradients(ranks):
    expected = torch.cat([torch.full((B_LOCAL, 2), float(r), dtype=F64) for r in range(WORLD)])
    summed = sum(_gather_weights(r) for r in range(WORLD))
    for rank, r in enumerate(ranks):
        torch.testing.assert_close(r["gather"]["value"], expected, rtol=0, atol=0)
        torch.testing.assert_close(r["gather"]["grad"],
                                   summed[rank * B_LOCAL:(rank + 1) * B_LOCAL], rtol=0, atol=1e-12)
