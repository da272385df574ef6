"""pymeta: gradient-based meta-learning (FOMAML, Reptile, iMAML, MAML, SeqFOMAML) on TensorFlow 2 /
Keras 3, with the API of the original pyMeta.

The main names are importable from here (`from pymeta import ClassificationTask, FOMAMLMetaLearner`);
they are loaded on first use, so `import pymeta.data` does not import TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Task": "pymeta.core.task", "SupervisedTask": "pymeta.core.task",
    "ClassificationTask": "pymeta.core.task", "ClassificationTaskFromFiles": "pymeta.core.task",
    "TaskAsSequenceOfTasks": "pymeta.core.task",
    "TaskDistribution": "pymeta.core.task_distribution",
    "TaskAsSequenceOfTasksDistribution": "pymeta.core.task_distribution",
    "GradBasedMetaLearner": "pymeta.core.meta_learner", "TaskData": "pymeta.core.task_data",
    "adapt": "pymeta.inner_loop",
    "FOMAMLMetaLearner": "pymeta.metalearners", "ReptileMetaLearner": "pymeta.metalearners",
    "iMAMLMetaLearner": "pymeta.metalearners", "MAMLMetaLearner": "pymeta.metalearners",
    "SeqFOMAMLMetaLearner": "pymeta.metalearners",
    "make_omniglot_cnn_model": "pymeta.networks", "make_miniimagenet_cnn_model": "pymeta.networks",
    "make_sinusoid_model": "pymeta.networks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pymeta' has no attribute {name!r}")
