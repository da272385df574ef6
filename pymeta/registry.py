"""The names behind `--dataset`, `--metamodel` and their choices, the RL datasets' defaults and where a
dataset's file lives by default. Importable without TensorFlow or numpy (`--help` stays fast)."""

import os

from pymeta.paths import special_kind

SUPERVISED_DATASETS = ("sinusoid", "omniglot", "miniimagenet")
# reinforcement learning (pymeta.rl): the MAML experiments' defaults of each task distribution
# (cbfinn/maml_rl; `pymeta.rl.problems.DEFAULTS` is this dict)
RL_DEFAULTS = {
    "navigation2d": {"meta_batch_size": 20, "inner_lr": 0.5, "horizon": 100},
    "halfcheetah_vel": {"meta_batch_size": 40, "inner_lr": 0.1, "horizon": 200},
    "halfcheetah_dir": {"meta_batch_size": 40, "inner_lr": 0.1, "horizon": 200},
    "ant_dir": {"meta_batch_size": 40, "inner_lr": 0.1, "horizon": 200},
}
RL_DATASETS = tuple(RL_DEFAULTS)
RL_GYM_DATASETS = tuple(d for d in RL_DATASETS if d != "navigation2d")  # on gymnasium environments
RL_METAMODELS = ("maml", "fomaml", "reptile")
DATASETS = SUPERVISED_DATASETS + RL_DATASETS
METAMODELS = ("fomaml", "reptile", "imaml", "maml", "seqfomaml")
OMNIGLOT_PROTOCOLS = ("standard", "allcharacters")
INNER_OPTIMIZERS = ("auto", "sgd", "adam")
# pymeta.metalearners.seq_fomaml.SEQ_FOMAML_VARIANTS, repeated to keep TensorFlow out of `--help`
SEQ_FOMAML_VARIANTS = ("plain", "loss_after_each_task", "sampled_loss_after_each_task",
                       "all_losses_after_each_task")
DEFAULT_DATA_PATHS = {"omniglot": "datasets/omniglot/omniglot.pkl",
                      "miniimagenet": "datasets/miniimagenet/miniimagenet.pkl"}
# what scripts/make_<dataset>_dataset.py writes by default (Mini-ImageNet's images take HDF5)
PREPARED_FILES = {"omniglot": "datasets/omniglot/omniglot.pkl", "miniimagenet": "datasets/miniimagenet/miniimagenet.h5"}


def check_data_file(dataset, data_path=None):
    """The data file of supervised `dataset` (--data_path, else the default), or FileNotFoundError saying
    how to prepare it; None for sinusoid (generated). Cheap: no TensorFlow, nothing read."""
    if dataset == "sinusoid" or dataset not in DEFAULT_DATA_PATHS:
        return None
    path = data_path or default_data_path(dataset)
    kind = special_kind(path)
    if kind is not None:
        raise FileNotFoundError(f"{path!r} is {kind}, not the {dataset} data file: give the file "
                                f"scripts/make_{dataset}_dataset.py wrote (--data_path)")
    if not os.path.exists(path):
        looked = repr(path) if data_path else f"{DEFAULT_DATA_PATHS[dataset]} or its .h5"
        raise FileNotFoundError(
            f"no {dataset} data file at {looked}: run `bash fetch_data.sh {dataset}` then "
            f"`python scripts/make_{dataset}_dataset.py`, which writes {PREPARED_FILES[dataset]} "
            "(or pass its path with --data_path)")
    return path


def default_data_path(dataset):
    """DEFAULT_DATA_PATHS[dataset], or the .h5 beside it when only that exists (the make scripts write
    HDF5 for large data, e.g. the full Mini-ImageNet)."""
    pkl = DEFAULT_DATA_PATHS[dataset]
    h5 = os.path.splitext(pkl)[0] + ".h5"
    return h5 if not os.path.exists(pkl) and os.path.exists(h5) else pkl
