"""The one trainer: a loop (``loop.fit``) over tasks (KD, EnNAS's ensemble KD, DNA's block MSE), with teachers
that are cached logits, frozen models or learning models, on the CPU, a GPU or several under torchrun."""

from edgekd.train.devices import TrainDevice, resolve_device, set_threads
from edgekd.train.distributed import DistEnv
from edgekd.train.evaluation import accuracy, calibration_batches, evaluate, predict_logits, recalibrate_bn
from edgekd.train.kd import DistillTask, train
from edgekd.train.loop import LOCAL, Batch, EpochStats, Runtime, StepSchedule, Task, fit, step_rng
from edgekd.train.losses import kd_loss
from edgekd.train.state import saved_epochs
from edgekd.train.teachers import CachedLogits, FrozenTeacher, LearningTeacher, TeacherSignal

__all__ = [
    "LOCAL", "Batch", "CachedLogits", "DistEnv", "DistillTask", "EpochStats", "FrozenTeacher", "LearningTeacher",
    "Runtime", "StepSchedule", "Task", "TeacherSignal", "TrainDevice", "accuracy", "calibration_batches",
    "evaluate", "fit", "kd_loss", "predict_logits", "recalibrate_bn", "resolve_device", "saved_epochs",
    "set_threads", "step_rng", "train",
]
