"""The trainer end to end on CPU: tiny runs composed from the real config."""
import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

from ssm.train.checkpoint import load_checkpoint
from ssm.train.loop import NonFiniteLoss
from ssm.tasks import evaluate_checkpoint, train
from faults import inject
from run_config import CONF

RESULT_KEYS = {"t2i_r1", "t2i_r5", "t2i_r10", "t2i_mean_rank", "t2i_median_rank", "i2t_r1",
               "i2t_r5", "i2t_r10", "i2t_mean_rank", "i2t_median_rank", "order_acc",
               "order_acc_text_only", "zeroshot_acc", "samples_per_s", "peak_mem_mb",
               "params_text", "text_encoder", "seed"}


@pytest.mark.parametrize("text,image", [("mamba", "convnet"), ("bimamba", "vit"),
                                        ("transformer", "convnet")])
def test_tiny_run_per_text_encoder(compose_train, tmp_path, text, image):
    cfg = compose_train(f"model/text_encoder={text}", image=image)
    results = train(cfg, tmp_path)
    assert RESULT_KEYS <= set(results)
    assert json.loads((tmp_path / "results.json").read_text()) == results
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in lines)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 4
    assert (tmp_path / "checkpoints" / "step_0000002.pt").exists()
    # Recall over the 16 held-out pairs: a count of queries out of 16, rising with k.
    assert results["val_pairs"] == 16 and results["order_acc_text_only"] == 0.5
    for way in ("t2i", "i2t"):
        r1, r5, r10 = (results[f"{way}_r{k}"] for k in (1, 5, 10))
        assert r1 <= r5 <= r10 and all((16 * r).is_integer() for r in (r1, r5, r10))


@pytest.mark.parametrize("loss", ["siglip", "itc_itm", "itc_text_lm"])
def test_every_loss_group_trains(compose_train, hydra_run, tmp_path, loss):
    hydra_run(f"loss={loss}")
    results = train(compose_train(f"loss={loss}"), tmp_path)
    assert results["loss"] == loss and results["text_encoder"] == "mamba"
    if loss == "itc_itm":  # each of 16 images with its caption and with another one
        assert (32 * results["itm_acc"]).is_integer()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    term = {"siglip": "loss_siglip", "itc_itm": "loss_itm", "itc_text_lm": "loss_text_lm"}[loss]
    assert term in lines[0]


def test_nan_loss_stops_with_the_step_named_and_keeps_the_last_good_state(compose_train, tmp_path,
                                                                         monkeypatch):
    inject(nan_at_step=3, patch=monkeypatch.setattr)
    cfg = compose_train("trainer.checkpoint_every=100")
    with pytest.raises(NonFiniteLoss, match="at step 3"):
        train(cfg, tmp_path)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 2


def test_refuses_to_overwrite_a_run_and_resume_needs_a_checkpoint(compose_train, tmp_path):
    train(compose_train(), tmp_path)
    with pytest.raises(FileExistsError, match="resume=true"):
        train(compose_train(), tmp_path)
    with pytest.raises(FileNotFoundError, match="resume=true"):
        train(compose_train("resume=true"), tmp_path / "empty")


def test_evaluate_checkpoint_reproduces_the_final_metrics(compose_train, tmp_path):
    results = train(compose_train(), tmp_path)  # writes .hydra/config.yaml, as under Hydra
    again, path = evaluate_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert path == tmp_path / "eval_last.json"
    for key in ("t2i_r1", "t2i_r5", "i2t_r5", "order_acc", "zeroshot_acc"):
        assert again[key] == results[key], key


def test_unknown_encoder_name_is_hydras_clear_error():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        with pytest.raises(MissingConfigException, match="lstm"):
            compose(config_name="train", overrides=["model/text_encoder=lstm"])


def test_bad_trainer_settings_are_named(compose_train, tmp_path):
    with pytest.raises(ValueError, match="trainer.precision"):
        train(compose_train("trainer.precision=fp8"), tmp_path)
    with pytest.raises(ValueError, match="multiple of trainer.grad_accum"):
        train(compose_train("trainer.grad_accum=3"), tmp_path / "b")


def test_grad_accumulation_counts_micro_batches(compose_train, tmp_path):
    """grad_accum micro-batches make one step (a contrastive loss then sees each
    micro-batch's negatives only, so this is not the full batch's loss)."""
    results = train(compose_train("trainer.grad_accum=2"), tmp_path)
    assert results["steps"] == 4 and results["samples_seen"] == 32


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_on_cpu(compose_train, tmp_path, precision):
    results = train(compose_train(f"trainer.precision={precision}"), tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in lines) and results["steps"] == 4
    if precision == "fp16":  # the scaler starts high and drops the first overflowing update(s)
        assert lines[-1]["skipped_updates"] >= 1


def test_evaluation_every_n_steps_is_logged(compose_train, tmp_path):
    train(compose_train("trainer.eval_every=2"), tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "eval/t2i_r5" in x]
    assert [x["step"] for x in evals] == [2, 4]
