"""The two-stage data distillation trainer (`derain train`): data, schedules, loop, checkpoints."""
from .schedule import PRESETS, WeightSchedule, lr_factor, weight_schedule  # noqa: F401
from .trainer import DistillationLoss, TrainConfig, TrainResult, evaluate_pairs, train  # noqa: F401
