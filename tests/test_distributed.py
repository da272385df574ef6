"""pymeta.metalearners.distributed (and pymeta.mpi): the MPI outer loop, run for real under `mpiexec -n 2`.

The MPI tests start the scripts of tests/mpi_scripts/ with mpiexec (1 TF thread per rank) and skip,
with the reason shown by `pytest -rs`, when mpi4py or mpiexec is missing (pip install -e .[mpi]).
"""

import glob
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pymeta import mpi as M
from pymeta.metalearners import distributed as D

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpi_scripts")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_TIMEOUT = 150  # seconds for one mpiexec run (a normal run takes 10-30 s)


def mpi_missing():
    """Why the MPI tests cannot run here, or None."""
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install -e .[mpi])"
    if shutil.which("mpiexec") is None:
        return "mpiexec is not on PATH (pip install mpich, or load your cluster's MPI)"
    return None


def child_env():
    """This environment without the variables of an enclosing MPI launch, 1 thread per rank."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCAL", "MV2_"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p))
    return env


def run_mpi(num_ranks, script, *args, timeout=RUN_TIMEOUT):
    """(return code, stdout, stderr, seconds) of `mpiexec -n num_ranks python script args`; the whole
    process group is killed if it runs past `timeout` (return code None)."""
    cmd = [shutil.which("mpiexec"), "-n", str(num_ranks), sys.executable, os.path.join(SCRIPTS, script),
           *map(str, args)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                            cwd=REPO, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return code, out, err, time.monotonic() - start


@pytest.fixture(scope="module")
def mpi():
    reason = mpi_missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def equivalence_runs(mpi, tmp_path_factory):
    """The meta-trainings of dist_equivalence.py on 1 rank and on 2 ranks."""
    out = {}
    for n in (1, 2):
        folder = tmp_path_factory.mktemp(f"ranks{n}")
        code, stdout, stderr, _ = run_mpi(n, "dist_equivalence.py", folder)
        assert code == 0, f"mpiexec -n {n} dist_equivalence.py failed ({code}):\n{stdout}\n{stderr[-4000:]}"
        reports = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(n)]
        with np.load(folder / f"params_{n}.npz") as z:
            params = {k: z[k] for k in z.files}
        out[n] = (reports, params)
    return out


def config_params(params, name):
    keys = sorted((k for k in params if k.startswith(name + "/")), key=lambda k: int(k.split("/")[1]))
    assert keys, f"no parameters stored for {name}"
    return [params[k] for k in keys]


CONFIGS = ["fomaml_m4", "fomaml_m3", "reptile_m4", "reptile_m3", "fomaml_steps_m3", "fomaml_cnn_m3",
           "imaml_m3", "maml_m3"]


# --- (a) all ranks hold identical parameters after every update ----------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS + ["per_rank_fomaml_m3"])
def test_ranks_hold_bit_identical_parameters(equivalence_runs, name):
    reports, _ = equivalence_runs[2]
    digests0, digests1 = reports[0][name], reports[1][name]
    assert len(digests0) >= 3
    assert digests0 == digests1  # sha256 of the parameter bytes, after initialize and every update
    assert len(set(digests0)) == len(digests0), "the parameters did not change at every update"


# --- (b), (c) 2 ranks give the 1-rank result (3 tasks on 2 ranks: 2 + 1, weighted mean) ----------------
@pytest.mark.parametrize("name", CONFIGS)
def test_two_ranks_equal_one_rank(equivalence_runs, name):
    one = config_params(equivalence_runs[1][1], name)
    two = config_params(equivalence_runs[2][1], name)
    assert len(one) == len(two)
    for a, b in zip(one, two):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CONFIGS)
def test_one_rank_equals_the_plain_metalearner(equivalence_runs, name):
    _, params = equivalence_runs[1]
    for a, b in zip(config_params(params, "plain_" + name), config_params(params, name)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_per_rank_sampling_evaluates_every_rank_share(equivalence_runs):
    reports, _ = equivalence_runs[2]
    assert reports[0]["per_rank_eval_count"] == [3]  # 2 tasks on rank 0 + 1 on rank 1, gathered
    assert reports[0]["stats"]["updates"] == reports[1]["stats"]["updates"] == 3
    assert reports[0]["stats"]["local_tasks"] == 6 and reports[1]["stats"]["local_tasks"] == 3


def test_check_sync_detects_divergence_and_broadcast_repairs_it(equivalence_runs):
    for report in equivalence_runs[2][0]:
        assert "meta-parameters differ across ranks" in report["param_divergence"]
        assert report["after_broadcast"] is None
        assert "np.random states differ" in report["rng_divergence"]
        assert report["resync_broadcasts"] == 1  # resync_every=1: one broadcast after the update
    for report in equivalence_runs[1][0]:
        assert report["param_divergence"] is None and report["rng_divergence"] is None


# --- (d) a rank that raises ends the job ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["excepthook", "context"])
def test_exception_on_one_rank_aborts_the_job(mpi, mode):
    code, out, err, seconds = run_mpi(2, "dist_abort.py", mode, timeout=90)
    assert code is not None, f"the job hung: killed after {seconds:.0f} s\n{err[-3000:]}"
    assert code != 0
    assert seconds < 60
    assert "deliberate failure on rank 1" in err
    assert "[pymeta rank 1/2]" in err and "MPI_Abort" in err
    assert "should never get here" not in out


# --- without MPI ---------------------------------------------------------------------------------------
LAUNCH_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
                    "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")


@pytest.fixture
def no_launcher(monkeypatch):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_is_mpi_run_reads_the_launcher_environment(no_launcher, monkeypatch):
    assert not M.is_mpi_run()
    monkeypatch.setenv("PMI_SIZE", "1")
    assert not M.is_mpi_run()  # mpiexec -n 1: a single process
    monkeypatch.setenv("PMI_SIZE", "4")
    assert M.is_mpi_run()
    monkeypatch.delenv("PMI_SIZE")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert M.is_mpi_run()


def test_share_bounds_cover_the_batch_once():
    for m in range(0, 12):
        for size in range(1, 6):
            bounds = [D.share_bounds(m, r, size) for r in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == m
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            counts = [stop - start for start, stop in bounds]
            assert max(counts) - min(counts) <= 1
    assert [D.share_bounds(3, r, 2) for r in range(2)] == [(0, 2), (2, 3)]


def test_seeds_per_rank_are_distinct_and_reproducible():
    seeds = [M.rank_seed(5, r) for r in range(8)]
    assert len(set(seeds)) == 8 and seeds == [M.rank_seed(5, r) for r in range(8)]
    assert M.seed_everything(5, rank=3) == 5  # replicated: the global seed on every rank
    assert M.seed_everything(5, rank=3, per_rank=True) == M.rank_seed(5, 3)


def test_single_process_wrapper_needs_no_mpi(no_launcher):
    """Outside mpiexec the wrapper is a single process, equal to the wrapped meta-learner, and the
    exception guard lets exceptions through."""
    import keras

    from pymeta.metalearners.fomaml import FOMAMLMetaLearner
    from pymeta.tasks.sinusoid_tasks import create_sinusoid_task_distribution

    mpi_was_loaded = "mpi4py.MPI" in sys.modules
    assert M.get_rank_and_size() == (0, 1)

    def make():
        M.seed_everything(3)
        model = keras.Sequential([keras.Input(shape=(1,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        return model, FOMAMLMetaLearner(model, keras.optimizers.Adam(0.01))

    dist = create_sinusoid_task_distribution(num_training_samples=6, num_test_samples=6)[0]
    model, plain = make()
    plain.initialize()
    start = plain.current_initial_parameters
    model, wrapped = make()
    dml = D.DistributedMetaLearner(wrapped)
    dml.initialize()
    dml.set_initial_parameters(start)
    assert (dml.rank, dml.size, dml.is_root) == (0, 1, True)
    for learner in (plain, dml):
        np.random.seed(11)
        for _ in range(2):
            learner.metatrain_step(dist.sample_batch(3), 2, 4)
    for a, b in zip(plain.current_initial_parameters, dml.current_initial_parameters):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert dml.check_sync() == dml.parameters_digest()
    losses, accs = dml.evaluate_tasks_distributed(dist.sample_batch(3), 2, 4)
    assert losses.shape == accs.shape == (3,)
    if not mpi_was_loaded:
        assert "mpi4py.MPI" not in sys.modules

    with pytest.raises(ValueError, match="plain"):
        with M.mpi_abort_on_exception():
            raise ValueError("plain exception outside MPI")
    assert sys.excepthook is sys.__excepthook__ or not isinstance(
        getattr(sys.excepthook, "__self__", None), M.AbortOnException)


def test_the_wrapper_wraps_any_metalearner(no_launcher):
    import keras

    from pymeta.metalearners import ReptileMetaLearner

    model = keras.Sequential([keras.Input(shape=(1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    dml = D.DistributedMetaLearner(ReptileMetaLearner(model, keras.optimizers.SGD(0.1)),
                                   task_sampling="per_rank")
    assert type(dml.metalearner).__name__ == "ReptileMetaLearner"
    assert dml.model is model and dml.task_sampling == "per_rank"
    with pytest.raises(ValueError, match="task_sampling"):
        D.DistributedMetaLearner(dml.metalearner, task_sampling="scatter")


# --- example_metatrain.py under mpiexec ---------------------------------------------------------------
@pytest.mark.slow
def test_example_metatrain_under_mpiexec_equals_one_process(mpi, tmp_path):
    """`mpiexec -n 2 python example_metatrain.py ...` (rank 0 logs and saves) trains the same model as
    the single-process command, on an uneven meta-batch (5 tasks on 2 ranks), with TensorBoard on:
    its extra validation task, drawn by a single process only, does not change the run (issue 16;
    TensorBoard on and off in one process: tests/test_robust_runs.py)."""
    args = ["--dataset=sinusoid", "--metamodel=fomaml", "--num_train_samples_per_class=10",
            "--num_test_samples_per_class=20", "--inner_batch_size=5", "--inner_lr=0.01", "--meta_batch_size=5",
            "--num_outer_metatraining_iterations=20", "--test_every_k_iterations=10", "--num_validation_batches=1",
            "--tensorboard", "--noprogress"]
    multi = _same_model_on_one_process_and_two_ranks(tmp_path, args)
    assert multi.stdout.count("iter     10") == 1  # only rank 0 logs
    assert glob.glob(str(tmp_path / "one" / "m.h5_run" / "tensorboard" / "events*"))
    assert glob.glob(str(tmp_path / "two" / "m.h5_run" / "tensorboard" / "events*"))


def _same_model_on_one_process_and_two_ranks(tmp_path, args):
    """Run example_metatrain.py with `args` in one process and under `mpiexec -n 2`; assert both
    write the same model; returns the MPI run's CompletedProcess."""
    from pymeta.model_io import load_model
    example = os.path.join(REPO, "example_metatrain.py")
    single = subprocess.run([sys.executable, example, *args, f"--model_save_filename={tmp_path}/one/m.h5"],
                            capture_output=True, text=True, cwd=REPO, env=child_env(), timeout=RUN_TIMEOUT)
    assert single.returncode == 0, single.stderr[-3000:]
    cmd = [shutil.which("mpiexec"), "-n", "2", sys.executable, example, *args,
           f"--model_save_filename={tmp_path}/two/m.h5"]
    multi = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=child_env(), timeout=RUN_TIMEOUT)
    assert multi.returncode == 0, multi.stderr[-3000:]
    for a, b in zip(load_model(tmp_path / "one" / "m.h5").get_weights(),
                    load_model(tmp_path / "two" / "m.h5").get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    return multi


# --- reinforcement learning under mpiexec -------------------------------------------------------------
@pytest.mark.slow
def test_maml_trpo_step_split_across_two_ranks_equals_the_single_process_step(mpi, tmp_path):
    """Each rank keeps 3 or 2 of 5 tasks' recorded episodes; TRPO's means (gradient, every CG
    Hessian-vector product, every line-search evaluation) are combined by Allreduces: both ranks
    take the step of one process holding all 5 tasks, and stay bit-identical."""
    code, stdout, stderr, _ = run_mpi(2, "rl_trpo_equivalence.py", tmp_path, timeout=400)
    assert code == 0, f"rl_trpo_equivalence.py failed ({code}):\n{stdout}\n{stderr[-4000:]}"
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["local_tasks"], r1["local_tasks"]) == (3, 2)
    flat = lambda t: np.concatenate([np.ravel(x) for x in t])  # noqa: E731
    np.testing.assert_array_equal(flat(r0["theta"]), flat(r1["theta"]))
    assert r0["trpo"]["accepted"] == r0["reference_trpo"]["accepted"] == 1.0
    assert r0["trpo"]["backtracks"] == r0["reference_trpo"]["backtracks"]
    # CG (10 steps, damping 1e-5) amplifies the round-off of the summation order to about 1e-8
    np.testing.assert_allclose(flat(r0["theta"]), flat(r0["reference_theta"]), rtol=1e-6, atol=1e-7)
    step = np.abs(flat(r0["reference_theta"]) - flat(r0["theta_before"])).max()
    assert np.abs(flat(r0["theta"]) - flat(r0["reference_theta"])).max() < 1e-5 * step
    for k in ("surrogate_before", "surrogate_after", "kl", "expected_improvement"):
        np.testing.assert_allclose(r0["trpo"][k], r0["reference_trpo"][k], rtol=1e-5, atol=1e-12)


def _rl_mpi_run(folder, iterations):
    """`mpiexec -n 2 example_metatrain.py` on tiny 2D-navigation FOMAML settings (model folder/m.h5)."""
    example = os.path.join(REPO, "example_metatrain.py")
    cmd = [shutil.which("mpiexec"), "-n", "2", sys.executable, example, "--dataset=navigation2d",
           "--metamodel=fomaml", "--meta_batch_size=3", "--episodes_per_task=2", "--horizon=10",
           f"--num_outer_metatraining_iterations={iterations}", "--test_every_k_iterations=2",
           "--save_every_k_iterations=1", "--notensorboard", "--noprogress", f"--model_save_filename={folder}/m.h5"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=child_env(), timeout=RUN_TIMEOUT)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout + run.stderr


@pytest.mark.slow
def test_rl_run_under_mpiexec_resumes_exactly(rl_mpi_whole_run, tmp_path):
    """A 2-rank RL run of 3 meta-iterations extended to 6 (resumed from its checkpoint: rank 0's
    generators and theta; the other rank's task stream re-seeded per iteration) ends with exactly the
    weights and training history of an uninterrupted 6-iteration run."""
    import pymeta.rl  # noqa: F401  (registers the policy's layers)
    from pymeta.model_io import load_model
    whole, split = rl_mpi_whole_run[0], tmp_path / "split"
    _rl_mpi_run(split, 3)
    log = _rl_mpi_run(split, 6)
    assert "resumed from" in log and "at iteration 3" in log
    for a, b in zip(load_model(str(whole / "m.h5")).get_weights(), load_model(str(split / "m.h5")).get_weights()):
        np.testing.assert_array_equal(a, b)
    train = [[{k: v for k, v in h.items() if k != "seconds"} for h in
              json.loads((f / "m_history.json").read_text())["history"] if "return_after" in h] for f in (whole, split)]
    assert [h["iteration"] for h in train[0]] == [1, 2, 3, 4, 5, 6] and train[0] == train[1]


@pytest.fixture(scope="module")
def rl_mpi_whole_run(mpi, tmp_path_factory):
    """An uninterrupted 6-iteration 2-rank RL run: (its folder, its log)."""
    folder = tmp_path_factory.mktemp("rl_mpi_whole")
    return folder, _rl_mpi_run(folder, 6)


@pytest.mark.slow
def test_rl_run_under_mpiexec_logs_and_saves_on_rank_0(rl_mpi_whole_run):
    """`mpiexec -n 2 python example_metatrain.py --dataset=navigation2d --metamodel=fomaml`: each rank
    collects its share of the meta-batch; rank 0 alone logs and writes the model and its history."""
    folder, log = rl_mpi_whole_run
    assert log.count("iter      3  return before adaptation") == 1  # only rank 0 logs
    history = json.loads((folder / "m_history.json").read_text())["history"]
    assert [h["iteration"] for h in history if "return_after" in h] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(h["return_after"]) for h in history if "return_after" in h)
