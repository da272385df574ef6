"""Rank 1 raises while rank 0 waits in the meta-update's Allreduce: the job must end (MPI_Abort).

    mpiexec -n 2 python dist_abort.py [excepthook|context]
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402

from pymeta.metalearners.distributed import DistributedMetaLearner  # noqa: E402
from pymeta.metalearners.fomaml import FOMAMLMetaLearner  # noqa: E402
from pymeta.mpi import get_rank_and_size, mpi_abort_on_exception, seed_everything  # noqa: E402
from pymeta.tasks.sinusoid_tasks import create_sinusoid_task_distribution  # noqa: E402

mode = sys.argv[1] if len(sys.argv) > 1 else "excepthook"


def main():
    rank, size = get_rank_and_size()
    seed_everything(0)
    model = keras.Sequential([keras.Input(shape=(1,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    dml = DistributedMetaLearner(FOMAMLMetaLearner(model, keras.optimizers.Adam(0.01)))
    dml.initialize()
    dist = create_sinusoid_task_distribution(num_training_samples=5, num_test_samples=5)[0]
    dml.metatrain_step(dist.sample_batch(2), 1, -1)  # one update together
    if rank == 1:
        raise RuntimeError("deliberate failure on rank 1")
    dml.metatrain_step(dist.sample_batch(2), 1, -1)  # rank 0 waits for rank 1 forever without Abort
    print("rank 0 should never get here", flush=True)


if mode == "none":  # no protection: rank 0 hangs (to show what the guard prevents)
    main()
elif mode == "context":
    with mpi_abort_on_exception():
        main()
else:
    mpi_abort_on_exception()
    main()
