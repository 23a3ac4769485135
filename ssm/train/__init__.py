"""Training machinery: the loop, checkpoints, optimizer and schedule, distributed set-up,
deterministic batches, metric loggers and peak-memory measurement. The task that wires
these to data, model and evaluation is ``ssm.tasks.train``."""
