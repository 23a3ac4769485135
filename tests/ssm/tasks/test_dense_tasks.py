"""Training runs with the issue-14 parts: dense data and the needle test, the probe suite
and blind baseline in results.json and eval_items.json, the validation curve, and equal
wall-clock budgets."""
import json

import pytest
import torch

from ssm.eval.probes import CATEGORIES
from ssm.tasks import train
from ssm.tasks.build import build, build_model
from ssm.train.budget import calibrate_steps, steps_within
from ssm.train.distributed import DistInfo

DENSE = ["data=dense_scenes", "data.train_size=64", "data.val_size=8", "data.zero_shot_size=0",
         "data.detail=1", "data.max_length=704", "eval.needle_items=4", "eval.blind_captions=64"]


def _losses(run_dir):
    return [json.loads(x)["loss"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(x)]


def test_dense_run_reports_the_needle_test(compose_train, tmp_path):
    results = train(compose_train(*DENSE), tmp_path)
    assert results["needle_queries"] == 12 and results["needle_chance"] == 0.2
    for key in ("needle_acc", "needle_acc_first", "needle_acc_middle", "needle_acc_last",
                "needle_acc_colour", "needle_acc_position"):
        assert 0 <= results[key] <= 1
    items = json.loads((tmp_path / "eval_items.json").read_text())
    assert len(items["needle"]) == 12 and len(items["t2i_rank"]) == 8
    assert {r["position"] for r in items["needle"]} == {"first", "middle", "last"}
    first = [r["correct"] for r in items["needle"] if r["position"] == "first"]
    assert results["needle_acc_first"] == pytest.approx(sum(first) / len(first))
    # Dense captions state counts and every attribute: every category but relations (detail 1).
    assert {f"probe_{c}" for c in CATEGORIES if c != "relation_swap"} <= set(results)


def test_probe_suite_and_blind_baseline_in_results(compose_train, tmp_path):
    results = train(compose_train(), tmp_path)
    items = json.loads((tmp_path / "eval_items.json").read_text())
    probes = items["probes"]
    assert probes and all({"index", "category", "correct", "blind"} <= set(r) for r in probes)
    for category in {r["category"] for r in probes}:
        mine = [r for r in probes if r["category"] == category]
        assert results[f"probe_{category}"] == pytest.approx(
            sum(r["correct"] for r in mine) / len(mine))
        assert results[f"blind_{category}"] == pytest.approx(
            sum(r["blind"] for r in mine) / len(mine))
    assert results["blind_captions"] == 64  # the shrunk training set, captions only
    assert len(items["order"]) == results["order_pairs"] and "order_acc_blind" in results


def test_validation_curve_is_logged_during_training(compose_train, tmp_path):
    train(compose_train("trainer.eval_every=2", "eval.curve_pairs=8"), tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    curve = [r for r in rows if "eval/val_loss" in r]
    assert [r["step"] for r in curve] == [2, 4]
    assert all(r["eval/val_curve_pairs"] == 8 and r["eval/val_loss"] > 0 for r in curve)


def test_budgeted_run_trains_as_a_run_of_its_step_count(compose_train, tmp_path):
    budgeted = train(compose_train("trainer.time_budget_s=0.6"), tmp_path / "budget")
    n = budgeted["max_steps"]
    assert budgeted["steps"] == n >= 1 and budgeted["time_budget_s"] == 0.6
    assert budgeted["step_ms_calibrated"] > 0
    assert json.loads((tmp_path / "budget" / "time_budget.json").read_text())["max_steps"] == n
    plain = train(compose_train(f"trainer.max_steps={n}"), tmp_path / "plain")
    assert _losses(tmp_path / "budget") == _losses(tmp_path / "plain")
    assert budgeted["t2i_r5"] == plain["t2i_r5"]


def test_calibration_leaves_model_and_rng_alone(compose_train):
    cfg = compose_train()
    objective = build(cfg.loss)
    model = build_model(cfg, objective)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    data = build(cfg.data)
    from ssm.data import ByteTokenizer
    from ssm.data.files import collate_image_text
    dataset, tokenizer = data.train_dataset(), ByteTokenizer()
    batches = iter([collate_image_text([dataset[i] for i in range(8 * k, 8 * k + 8)], tokenizer,
                                       data.max_length) for k in range(4)])
    chosen = calibrate_steps(model, objective, build(cfg.optim), batches, torch.device("cpu"),
                             seconds=100.0, dist=DistInfo(), timed=2, warmup=1)
    assert chosen["max_steps"] == steps_within(100.0, chosen["step_ms_calibrated"] / 1000)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_steps_within():
    assert steps_within(10.0, 0.3) == 33 and steps_within(0.1, 1.0) == 1
    with pytest.raises(ValueError, match="seconds"):
        steps_within(0, 1.0)


def test_bad_time_budget_is_named(compose_train):
    with pytest.raises(ValueError, match="time_budget_s"):
        build(compose_train("trainer.time_budget_s=-1").trainer)


def test_probe_items_limits_the_probe_suite(compose_train, tmp_path):
    train(compose_train("eval.probe_items=5", "trainer.max_steps=1"), tmp_path)
    items = json.loads((tmp_path / "eval_items.json").read_text())
    assert {r["index"] for r in items["probes"]} <= set(range(5)) and items["probes"]
    assert len(items["t2i_rank"]) == 16  # retrieval still over every val pair
