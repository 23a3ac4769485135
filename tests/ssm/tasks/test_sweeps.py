"""Sweep presets: the Optuna search (hparams_search=itc_optuna), the SLURM launcher and its
submitit_local twin (hydra/launcher=slurm, slurm_local), and joblib (local_parallel).
Real ``python experiments/train.py -m`` processes on the shrunk config."""
import importlib.util
import json
import math
import os
import pickle
import stat
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ssm.train import distributed
from ssm.tasks.build import build_model
from run_config import CONF, ROOT, shrunk

WIDTH_SHRINK = "model.text_encoder.width=16"  # dropped where the search picks the width


def _compose(*overrides, hydra_config=True):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="train", overrides=shrunk(*overrides),
                       return_hydra_config=hydra_config)


def _multirun(sweep_dir, *overrides, width=True, env_extra=None):
    """The Transformer text tower: these tests are about launching, and it needs no build
    of the CPU scan kernel (a minute, once per checkout) in each fresh process. FAULT_*
    variables in env_extra run it through tests/faults.py."""
    args = [a for a in shrunk("model/text_encoder=transformer", *overrides)
            if width or a != WIDTH_SHRINK]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1", **(env_extra or {})}
    faults = [str(ROOT / "tests" / "faults.py")] if any(k.startswith("FAULT_") for k in env) else []
    return subprocess.run([sys.executable, *faults, str(ROOT / "experiments" / "train.py"), "-m",
                           f"hydra.sweep.dir={sweep_dir}", *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


# --- hparams_search=itc_optuna ---------------------------------------------------------------

def test_itc_optuna_composes_a_seeded_tpe_search_that_maximises_the_metric():
    cfg = _compose("hparams_search=itc_optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize" and cfg.optimize_metric == "t2i_r5"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 0
    assert sweeper.storage is None and sweeper.n_trials == 20
    assert dict(sweeper.params) == {
        "optim.lr": "tag(log, interval(3e-4, 1e-2))",
        "model.text_encoder.width": "choice(64, 96, 128)",
        "model.init_logit_scale": "interval(1.6, 4.6)"}
    # The temperature key exists (so the sweeper may override it) at CLIP's default.
    assert cfg.model.init_logit_scale == pytest.approx(math.log(1 / 0.07))
    model = build_model(_compose("hparams_search=itc_optuna", "model.init_logit_scale=3.5"),
                        instantiate(cfg.loss))
    assert model.logit_scale.item() == pytest.approx(3.5)


@pytest.mark.parametrize("encoder", ["mamba", "bimamba", "transformer"])
def test_every_searched_width_builds_every_text_encoder(encoder):
    for width in (64, 96, 128):  # the Transformer needs width % heads == 0
        cfg = _compose("hparams_search=itc_optuna", f"model/text_encoder={encoder}",
                       f"model.text_encoder.width={width}", hydra_config=False)
        text = instantiate(cfg.model.text_encoder)
        assert text.width == width
        if encoder == "transformer":  # Mamba takes any width; its forward is tested elsewhere
            out = text(torch.randint(0, 256, (2, 8)), torch.ones(2, 8, dtype=torch.bool))
            assert out.shape == (2, width)


def test_unknown_hparams_search_is_hydras_clear_error():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        with pytest.raises(MissingConfigException, match="nope"):
            compose(config_name="train", overrides=["hparams_search=nope"])


@pytest.mark.slow  # a subprocess sweep or training run: seconds each
def test_optuna_runs_two_trials_and_reports_the_best(tmp_path):
    done = _multirun(tmp_path, "hparams_search=itc_optuna", "hydra.sweeper.n_trials=2",
                     width=False)
    assert done.returncode == 0, done.stderr[-3000:]
    best = OmegaConf.load(tmp_path / "optimization_results.yaml")
    trials = {}
    for num in (0, 1):
        run = tmp_path / str(num)
        overrides = dict(o.split("=", 1) for o in OmegaConf.load(run / ".hydra/overrides.yaml"))
        cfg = OmegaConf.load(run / ".hydra/config.yaml")
        assert cfg.model.text_encoder.width in (64, 96, 128)
        assert 3e-4 <= cfg.optim.lr <= 1e-2 and 1.6 <= cfg.model.init_logit_scale <= 4.6
        assert float(overrides["optim.lr"]) == cfg.optim.lr  # the trial ran what Optuna drew
        trials[num] = (_results(run)["t2i_r5"], cfg)
    assert best.best_value == max(value for value, _ in trials.values())
    value, cfg = next(t for t in trials.values() if t[0] == best.best_value)
    assert best.best_params["model.text_encoder.width"] == cfg.model.text_encoder.width


@pytest.mark.slow  # a subprocess sweep or training run: seconds each
def test_failed_trials_are_logged_and_the_search_goes_on(tmp_path):
    """Every trial diverges: each is logged as failed, both run, and the sweep ends with
    Optuna's own message (no trial completed), not a crash inside the sweeper."""
    done = _multirun(tmp_path, "hparams_search=itc_optuna", "hydra.sweeper.n_trials=2",
                     width=False, env_extra={"FAULT_NAN_AT_STEP": "2"})
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert output.count("Failed experiment: loss is nan at step 2") == 2, output[-3000:]
    assert (tmp_path / "1" / "metrics.jsonl").exists()
    assert "No trials are completed yet" in output


def test_train_returns_the_named_metric_and_names_a_bad_one(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # the import sets it
    spec = importlib.util.spec_from_file_location("train_entry", ROOT / "experiments/train.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    results = {"t2i_r5": 0.25, "text_encoder": "mamba"}
    assert entry.objective(results, "t2i_r5") == 0.25
    assert math.isnan(entry.objective({}, "t2i_r5"))  # ranks other than 0
    with pytest.raises(ValueError, match=r"t2i_r55.*\['t2i_r5'\]"):
        entry.objective(results, "t2i_r55")
    with pytest.raises(ValueError, match="not a number"):
        entry.objective(results, "text_encoder")
    # A single run or a basic sweep ignores the value: a missing metric is no error there.
    assert math.isnan(entry.objective(results, "t2i_r55", required=False))


# --- hydra/launcher=slurm and slurm_local ----------------------------------------------------

def test_slurm_launcher_composes_with_one_task_per_gpu():
    cfg = _compose("hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                   "hydra.launcher.gpus_per_node=4")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 4
    assert launcher.tasks_per_node == 4  # DDP: one rank per GPU unless set
    assert launcher.nodes == 1 and launcher.timeout_min > 0 and launcher.cpus_per_task > 0
    assert launcher.mem_gb > 0 and launcher.array_parallelism > 0
    assert launcher.setup == [] and dict(launcher.additional_parameters) == {}
    raw = OmegaConf.to_container(cfg.hydra, resolve=False)
    assert raw["launcher"]["submitit_folder"].startswith("${hydra.sweep.dir}/")
    assert "%f" in raw["sweep"]["dir"]  # microseconds: sweeps started together differ


@pytest.mark.parametrize("name", ["slurm_local", "local_parallel"])
def test_local_launchers_compose(name):
    launcher = _compose(f"hydra/launcher={name}").hydra.launcher
    if name == "slurm_local":
        assert launcher._target_.endswith("submitit_launcher.LocalLauncher")
        assert launcher.tasks_per_node == 1 and launcher.nodes == 1
    else:
        assert launcher._target_.endswith("JoblibLauncher") and launcher.n_jobs == -1


def test_slurm_sweep_submits_an_array_of_ddp_jobs(tmp_path):
    """The real launcher up to sbatch: a stand-in sbatch keeps the script and refuses
    (submitit also looks for srun on PATH)."""
    bin_dir, script = tmp_path / "bin", tmp_path / "sbatch_script.sh"
    bin_dir.mkdir()
    for name, body in (("sbatch", f'cp "$1" {script}\necho "no cluster here" >&2\nexit 1'),
                       ("srun", "exit 1")):
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    done = _multirun(tmp_path / "sweep", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                     "hydra.launcher.gpus_per_node=4", "hydra.launcher.tasks_per_node=4",
                     "hydra.launcher.setup=[module load cuda]", "seed=0,1",
                     env_extra={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode != 0 and script.exists(), done.stderr[-3000:]
    text = script.read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --ntasks-per-node=4", "#SBATCH --nodes=1", "#SBATCH --array=0-1%2",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --time=240", "module load cuda",
                 "export SUBMITIT_EXECUTOR=slurm"):
        assert line in text, (line, text)
    assert f"--output={tmp_path / 'sweep' / '.submitit'}" in text


@pytest.mark.slow  # a subprocess sweep or training run: seconds each
def test_slurm_local_runs_one_job_whose_tasks_are_ddp_ranks(tmp_path):
    """One job of two tasks, as SLURM would start it with tasks_per_node=2."""
    done = _multirun(tmp_path, "hydra/launcher=slurm_local", "hydra.launcher.tasks_per_node=2")
    assert done.returncode == 0, done.stderr[-3000:]
    results = _results(tmp_path / "0")
    assert results["steps"] == 4 and results["samples_seen"] == 32  # global batch: 4 x 8
    returns = {}
    for path in (tmp_path / ".submitit").glob("*/*_result.pkl"):  # inside the sweep dir
        with open(path, "rb") as f:
            status, job_return = pickle.load(f)
        assert status == "success", job_return
        returns[int(path.name.split("_")[-2])] = job_return.return_value
    # Rank 0 returns the metric; rank 1 joined its process group and evaluated nothing.
    assert returns[0] == results["t2i_r5"] and math.isnan(returns[1])


@pytest.fixture
def environ(monkeypatch):
    """A private os.environ, without torchrun's variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                        "MASTER_PORT") and not k.startswith(("SLURM_", "SUBMITIT_"))}
    monkeypatch.setattr(os, "environ", env)
    return env


def _slurm_task(env, rank, tasks=8, nodes=2):
    env.update(SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID="4242", SLURM_NTASKS=str(tasks),
               SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank % (tasks // nodes)),
               SLURM_NODEID=str(rank // (tasks // nodes)), SLURM_JOB_NUM_NODES=str(nodes),
               SLURM_JOB_NODELIST="gpu[3-4]")


def test_slurm_tasks_get_torchrun_variables(environ):
    _slurm_task(environ, rank=5)
    assert distributed.export_submitit_environment()
    assert {k: environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                                    "MASTER_ADDR")} == {
        "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
        "MASTER_ADDR": "gpu3"}
    port = environ["MASTER_PORT"]
    assert 20000 <= int(port) < 60000
    for rank in (0, 7):  # every task of the job agrees on the rendezvous
        environ.pop("WORLD_SIZE")
        _slurm_task(environ, rank)
        distributed.export_submitit_environment()
        assert environ["MASTER_ADDR"] == "gpu3" and environ["MASTER_PORT"] == port


def test_torchrun_or_a_single_task_is_left_alone(environ):
    assert not distributed.export_submitit_environment()  # not a submitit job
    _slurm_task(environ, rank=0, tasks=1, nodes=1)
    assert not distributed.export_submitit_environment() and "WORLD_SIZE" not in environ
    _slurm_task(environ, rank=3)
    environ.update(WORLD_SIZE="2", RANK="1", MASTER_PORT="29500")  # torchrun's own
    assert not distributed.export_submitit_environment() and environ["RANK"] == "1"
    environ.pop("WORLD_SIZE")
    distributed.export_submitit_environment()
    assert environ["MASTER_PORT"] == "29500"  # a port the user chose wins


# --- hydra/launcher=local_parallel -----------------------------------------------------------

@pytest.mark.slow  # a subprocess sweep or training run: seconds each
def test_local_parallel_runs_two_jobs_at_once(tmp_path):
    done = _multirun(tmp_path, "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2",
                     "seed=0,1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in done.stdout + done.stderr
    assert [_results(tmp_path / str(n))["seed"] for n in (0, 1)] == [0, 1]
