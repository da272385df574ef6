"""MAML-TRPO's outer step split across ranks equals the single-process step on all the tasks.

Every rank records the same episodes (same seed), keeps its contiguous share of the tasks and takes
the TRPO step with its means combined by Allreduces; rank 0 also takes the single-process step on all
the tasks with a second copy of the policy. Writes <folder>/rank<r>.json.

    mpiexec -n 2 python rl_trpo_equivalence.py FOLDER
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

from pymeta import optim  # noqa: E402
from pymeta.metalearners.distributed import share_bounds  # noqa: E402
from pymeta.mpi import Collectives, default_comm, mpi_abort_on_exception  # noqa: E402
from pymeta.rl import Agent, make_gaussian_policy, navigation2d  # noqa: E402
from pymeta.rl.navigation import Navigation2DEnv  # noqa: E402
from pymeta.rl.trpo import MAMLTRPOMetaLearner  # noqa: E402


def learner():
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    model = make_gaussian_policy(2, 2, hidden=(8,), seed=5)
    agent = Agent(model, Navigation2DEnv.action_space)
    ml = MAMLTRPOMetaLearner(model, max_kl=0.01, inner_optimizer=optim.sgd(0.5), objective=agent.objective)
    ml.initialize()
    return ml


def main():
    mpi_abort_on_exception()
    coll = Collectives(default_comm())
    np.random.seed(0)
    ml = learner()
    data = ml.stack_tasks(navigation2d(batch_size=5, horizon=12).sample_batch(), 1, 3)  # 5 tasks: 3 + 2
    start, stop = share_bounds(5, coll.rank, coll.size)
    local = tf.nest.map_structure(lambda a: np.asarray(a)[start:stop], data)
    ml.collectives = coll
    before = [v.numpy().tolist() for v in ml.meta_variables]
    out = ml.trpo_update(local)
    report = {"theta_before": before, "theta": [v.numpy().tolist() for v in ml.meta_variables], "trpo": out,
              "local_tasks": stop - start}
    if coll.rank == 0:
        reference = learner()
        ref = reference.trpo_update(data)
        report["reference_theta"] = [v.numpy().tolist() for v in reference.meta_variables]
        report["reference_trpo"] = ref
    with open(os.path.join(sys.argv[1], f"rank{coll.rank}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
