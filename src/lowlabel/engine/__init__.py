"""What every recipe shares: config, runtime, trainer, checkpoints, momentum/queue, schedules."""
