"""Run small meta-trainings through DistributedMetaLearner on however many ranks it is started with.

    mpiexec -n 2 python dist_equivalence.py OUT_DIR

Writes OUT_DIR/rank<r>.json: per configuration, the digest of the meta-parameters after every update
(to compare ranks), and on rank 0 OUT_DIR/params_<size>.npz: the final meta-parameters of every
configuration (to compare a 2-rank run with a 1-rank run). A 1-rank run also stores the result of the
wrapped meta-learner run without the wrapper ('plain_<config>').
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

from pymeta.core.task import ClassificationTask  # noqa: E402
from pymeta.core.task_distribution import TaskDistribution  # noqa: E402
from pymeta.metalearners.distributed import DistributedMetaLearner  # noqa: E402
from pymeta.metalearners.fomaml import FOMAMLMetaLearner  # noqa: E402
from pymeta.metalearners.imaml import iMAMLMetaLearner  # noqa: E402
from pymeta.metalearners.maml import MAMLMetaLearner  # noqa: E402
from pymeta.metalearners.reptile import ReptileMetaLearner  # noqa: E402
from pymeta.mpi import mpi_abort_on_exception, seed_everything  # noqa: E402
from pymeta.networks import make_omniglot_cnn_model  # noqa: E402
from pymeta.tasks.sinusoid_tasks import create_sinusoid_task_distribution  # noqa: E402

mpi_abort_on_exception()
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
out_dir = sys.argv[1]
UPDATES = 3


def sinusoid_setup():
    model = keras.Sequential([keras.Input(shape=(1,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    dist = create_sinusoid_task_distribution(num_training_samples=10, num_test_samples=20)[0]
    return model, dist, 3, 5  # inner steps, inner batch size (< 10: minibatches drawn from np.random)


def cnn_setup():
    model = make_omniglot_cnn_model(3, input_shape=(16, 16, 1), filters=8)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    rng = np.random.RandomState(7)
    X = rng.randint(0, 256, (8 * 6, 16, 16, 1)).astype(np.uint8)
    y = np.repeat(np.arange(8), 6)
    task = ClassificationTask(X, y, num_training_samples_per_class=2, num_test_samples_per_class=2,
                              num_training_classes=3, split_train_test=0.5)
    return model, TaskDistribution([task], [1.0], batch_size=1), 2, 4


# name -> (setup, learner class, outer learning rate, meta-batch size, API)
CONFIGS = {
    "fomaml_m4": (sinusoid_setup, FOMAMLMetaLearner, 0.01, 4, "fast"),
    "fomaml_m3": (sinusoid_setup, FOMAMLMetaLearner, 0.01, 3, "fast"),
    "reptile_m4": (sinusoid_setup, ReptileMetaLearner, 0.5, 4, "fast"),
    "reptile_m3": (sinusoid_setup, ReptileMetaLearner, 0.5, 3, "fast"),
    "fomaml_steps_m3": (sinusoid_setup, FOMAMLMetaLearner, 0.01, 3, "steps"),
    "fomaml_cnn_m3": (cnn_setup, FOMAMLMetaLearner, 0.01, 3, "fast"),
    "imaml_m3": (sinusoid_setup, iMAMLMetaLearner, 0.01, 3, "fast"),
    "maml_m3": (sinusoid_setup, MAMLMetaLearner, 0.01, 3, "fast"),
}


def run(name, distributed=True, init=None):
    setup, cls, outer_lr, m, api = CONFIGS[name]
    seed_everything(1000 + rank if distributed else 1000)  # different model init per rank: broadcast fixes
    model, dist, T, B = setup()
    seed_everything(42)  # the same task stream on every rank
    opt = keras.optimizers.SGD(outer_lr) if cls is ReptileMetaLearner else keras.optimizers.Adam(outer_lr)
    learner = cls(model, opt)
    if distributed:
        learner = DistributedMetaLearner(learner, comm=comm)
    learner.initialize()
    if init is not None:  # the plain run starts where the distributed one started
        learner.set_initial_parameters(init)
    start = learner.current_initial_parameters
    digests = [learner.parameters_digest()] if distributed else []
    for _ in range(UPDATES):
        tasks = dist.sample_batch(m)
        if api == "fast":
            learner.metatrain_step(tasks, T, B)
        else:
            own = learner.local_tasks(tasks, T, B) if distributed else tasks
            results = []
            for task in own:
                learner.task_begin(task)
                task.fit_n_iterations(model, T, B)
                results.append(learner.task_end(task))
            learner.update(results)
        if distributed:
            digests.append(learner.parameters_digest())
    if distributed:
        learner.check_sync()
    return digests, start, learner.current_initial_parameters


report, params = {}, {}
for name in CONFIGS:
    digests, start, theta = run(name)
    report[name] = digests
    for i, v in enumerate(theta):
        params[f"{name}/{i}"] = v
    if size == 1:
        _, _, theta = run(name, distributed=False, init=start)
        for i, v in enumerate(theta):
            params[f"plain_{name}/{i}"] = v

# per-rank sampling: each rank its own stream and its own share; only checks that ranks stay in sync
model, dist, T, B = sinusoid_setup()
seed_everything(7, per_rank=True)
dml = DistributedMetaLearner(FOMAMLMetaLearner(model, keras.optimizers.Adam(0.01)), comm=comm,
                             task_sampling="per_rank")
dml.initialize()
digests = []
for _ in range(UPDATES):
    dml.metatrain_step(dist.sample_batch(dml.local_batch_size(3)), T, B)
    digests.append(dml.parameters_digest())
report["per_rank_fomaml_m3"] = digests
losses, _ = dml.evaluate_tasks_distributed(dist.sample_batch(dml.local_batch_size(3)), T, B)
report["per_rank_eval_count"] = [len(losses)]
report["stats"] = dict(dml.stats)


def sync_problem(learner):
    try:
        learner.check_sync()
    except RuntimeError as e:
        return str(e)
    return None


# check_sync notices diverged parameters; broadcast_state repairs them
if rank == 1:
    theta = dml.current_initial_parameters
    dml.set_initial_parameters([theta[0] + 1.0] + theta[1:])
report["param_divergence"] = sync_problem(dml)
dml.broadcast_state()
report["after_broadcast"] = sync_problem(dml)
# ... and diverged np.random streams under replicated sampling
replicated = DistributedMetaLearner(dml.metalearner, comm=comm, resync_every=1)
seed_everything(3)
if rank == 0:
    np.random.uniform()  # e.g. validation tasks drawn on rank 0 only
report["rng_divergence"] = sync_problem(replicated)
seed_everything(3)
replicated.metatrain_step(dist.sample_batch(3), T, B)
report["resync_broadcasts"] = replicated.stats["broadcasts"]

with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
    json.dump(report, f)
if rank == 0:
    np.savez(os.path.join(out_dir, f"params_{size}.npz"), **params)
