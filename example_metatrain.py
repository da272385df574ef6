"""Meta-train a network with FOMAML or Reptile: the command line of the original pyMeta.

    python example_metatrain.py --dataset=sinusoid --metamodel=fomaml \
        --num_train_samples_per_class=10 --num_test_samples_per_class=100 \
        --num_inner_training_iterations=5 --inner_batch_size=10 --meta_lr=0.001 --inner_lr=0.01 \
        --meta_batch_size=5 --num_validation_batches=10 --model_save_filename=saved/model.h5 \
        --num_outer_metatraining_iterations=10000
"""

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from pymeta.experiment import DATASETS, RunConfig  # noqa: E402

FLAGS = flags.FLAGS
_d = RunConfig()

flags.DEFINE_string("dataset", _d.dataset, f"one of {', '.join(DATASETS)}")
flags.DEFINE_string("metamodel", _d.metamodel, "fomaml, reptile, imaml or maml (second order)")
flags.DEFINE_integer("num_output_classes", _d.num_output_classes, "N: classes per task (N-way)")
flags.DEFINE_integer("num_train_samples_per_class", _d.num_train_samples_per_class,
                     "K: training (support) samples per class (K-shot); sinusoid: training points")
flags.DEFINE_integer("num_test_samples_per_class", _d.num_test_samples_per_class,
                     "Q: test (query) samples per class; sinusoid: test points")
flags.DEFINE_integer("num_outer_metatraining_iterations", _d.num_outer_metatraining_iterations,
                     "meta-iterations (outer loop)")
flags.DEFINE_integer("meta_batch_size", _d.meta_batch_size, "tasks per meta-iteration")
flags.DEFINE_float("meta_lr", _d.meta_lr, "outer learning rate (Adam for FOMAML, SGD for Reptile)")
flags.DEFINE_integer("num_validation_batches", _d.num_validation_batches,
                     "meta-batches of validation tasks averaged at each validation")
flags.DEFINE_integer("num_inner_training_iterations", _d.num_inner_training_iterations,
                     "inner steps per task")
flags.DEFINE_integer("inner_batch_size", _d.inner_batch_size, "inner minibatch size; -1 = N*K")
flags.DEFINE_float("inner_lr", _d.inner_lr, "inner learning rate (SGD, or Adam with beta_1=0 for "
                   "Reptile and sinusoid)")
flags.DEFINE_integer("save_every_k_iterations", _d.save_every_k_iterations, "save the model every k")
flags.DEFINE_integer("test_every_k_iterations", _d.test_every_k_iterations, "validate every k")
flags.DEFINE_string("model_save_filename", _d.model_save_filename, "where to save the model (.h5)")
flags.DEFINE_alias("model_save_filaname", "model_save_filename")  # the original's spelling
flags.DEFINE_integer("seed", _d.seed, "random seed (numpy, Python, TensorFlow)")
flags.DEFINE_string("data_path", _d.data_path, "dataset file (default datasets/<dataset>/<dataset>.pkl)")
flags.DEFINE_enum("omniglot_protocol", _d.omniglot_protocol, ["standard", "allcharacters"],
                  "standard: 1200 rotated training characters (literature); allcharacters: the "
                  "original pyMeta's alphabet split")
flags.DEFINE_boolean("transductive", _d.transductive, "evaluate with the batch statistics of the "
                     "query set (original behaviour); --notransductive uses the support set's")
flags.DEFINE_enum("precision", _d.precision, ["float32", "mixed_bfloat16"],
                  "mixed_bfloat16 computes convolutions in bfloat16 (faster on CPUs with bf16)")
flags.DEFINE_boolean("fast", _d.fast, "one compiled call per meta-batch (--nofast: the step-by-step "
                     "task_begin / fit_n_iterations / task_end / update API)")
flags.DEFINE_integer("iterations_per_call", _d.iterations_per_call,
                     "meta-iterations per compiled call (0: 10 for sinusoid, 1 otherwise)")
flags.DEFINE_boolean("progress", _d.progress, "show a progress bar")
flags.DEFINE_boolean("anneal_meta_lr", _d.anneal_meta_lr, "decay meta_lr linearly to 0 over the run "
                     "(Reptile's recipe)")
flags.DEFINE_integer("num_threads", _d.num_threads, "TensorFlow threads (0: all cores; under MPI: "
                     "cores / ranks per node)")
flags.DEFINE_integer("inter_op_threads", _d.inter_op_threads, "TensorFlow ops run at once (0: as "
                     "--num_threads); --num_threads=1 --inter_op_threads=2 runs two tasks of a meta-batch "
                     "at a time, one thread each (the fastest layout for the conv nets on 2 cores)")
flags.DEFINE_enum("inner_optimizer", _d.inner_optimizer, ["auto", "sgd", "adam"],
                  "auto: the original's choice (Adam with beta_1=0 for Reptile and sinusoid, SGD otherwise)")
flags.DEFINE_float("imaml_lambda_reg", _d.imaml_lambda_reg, "iMAML: strength lambda of the proximal "
                   "term (lambda/2)||phi - theta||^2")
flags.DEFINE_integer("imaml_cg_steps", _d.imaml_cg_steps, "iMAML: conjugate-gradient steps per task "
                     "(0 = the FOMAML gradient)")
flags.DEFINE_float("imaml_cg_damping", _d.imaml_cg_damping, "iMAML: damping added to I + H/lambda")
flags.DEFINE_float("imaml_lam_damping", _d.imaml_lam_damping, "iMAML: the meta-gradient's system uses "
                   "H/(lambda + lam_damping), as the reference implementation (its default: 10; 0: exact)")
flags.DEFINE_boolean("persistent_inner_state", _d.persistent_inner_state, "keep the inner optimizer's "
                     "state (Adam's moments, step count) from task to task, as the original Reptile code "
                     "did (fomaml, reptile; saved in the .h5 model); default: fresh for every task")
flags.DEFINE_string("run_dir", _d.run_dir, "checkpoints and TensorBoard logs (default: <model file "
                    "without extension>_run/)")
flags.DEFINE_boolean("resume", _d.resume, "continue from the last checkpoint in --run_dir if there is one")
flags.DEFINE_boolean("overwrite", _d.overwrite, "allow replacing a model file / run directory of another run")
flags.DEFINE_integer("keep_checkpoints", _d.keep_checkpoints, "checkpoints kept in --run_dir")
flags.DEFINE_boolean("tensorboard", _d.tensorboard, "write TensorBoard summaries to <run_dir>/tensorboard")


def config_from_flags():
    return RunConfig(**{f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(RunConfig)})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from pymeta.mpi import is_mpi_run, mpi_abort_on_exception
    from pymeta.training import Interrupted, metatrain
    if is_mpi_run():
        mpi_abort_on_exception()  # a failing rank ends the whole job instead of hanging the others
    try:
        metatrain(config_from_flags())
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        if is_mpi_run():
            raise  # -> MPI abort of every rank
        return 2
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        return 128 + e.signum
    return 0


if __name__ == "__main__":
    app.run(main)
