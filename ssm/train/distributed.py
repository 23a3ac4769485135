"""torch.distributed set-up from torchrun's environment, and the few collectives we use.

Under Hydra's submitit launchers (``hydra/launcher=slurm`` or ``slurm_local``) with
``tasks_per_node > 1``, each task is one rank: ``export_submitit_environment`` fills in the
variables torchrun would have set, from submitit's job environment.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def submitit_torchrun_environment() -> dict[str, str]:
    """The variables torchrun would set for this process when it is one task of a multi-task
    submitit job (SLURM, or submitit's local executor); {} otherwise. All tasks of a job
    agree: the master is the job's first host, and the port is MASTER_PORT when set, else
    drawn from the job id (so two jobs on one node differ)."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return {}
    from submitit import JobEnvironment  # comes with the submitit launcher

    job = JobEnvironment()
    if job.num_tasks <= 1:
        return {}
    port = os.environ.get("MASTER_PORT") or str(20000 + zlib.crc32(job.job_id.encode()) % 40000)
    return {"RANK": str(job.global_rank), "WORLD_SIZE": str(job.num_tasks),
            "LOCAL_RANK": str(job.local_rank),
            "LOCAL_WORLD_SIZE": str(job.num_tasks // job.num_nodes),
            "MASTER_ADDR": job.hostnames[0], "MASTER_PORT": port}


def export_submitit_environment() -> bool:
    """Put ``submitit_torchrun_environment()`` into os.environ, unless WORLD_SIZE is already
    set (torchrun, or the user, wins). True when it set anything."""
    if "WORLD_SIZE" in os.environ:
        return False
    variables = submitit_torchrun_environment()
    os.environ.update(variables)
    return bool(variables)


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*),
    or a multi-task submitit job (see ``export_submitit_environment``); a plain ``python``
    launch is a world of one. gloo on CPU, nccl on CUDA."""
    export_submitit_environment()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo()
    info = DistInfo(rank=int(os.environ["RANK"]), world_size=world_size,
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":  # modulo: SLURM may show each task only its own GPU
            torch.cuda.set_device(info.local_rank % torch.cuda.device_count())
        dist.init_process_group(backend=backend)
    return info


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_across_ranks(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of a scalar over ranks (for logging a global-batch loss)."""
    if not info.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
