"""Training: the loop, its objectives and terms, rollouts, engines, teacher, checkpoints, ranks."""
