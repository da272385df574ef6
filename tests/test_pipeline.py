"""The whole image pipeline on a synthetic Omniglot folder, in CI: PNG folder -> make script ->
pkl / h5 -> task distributions -> meta-training -> meta-test."""

import json

import keras
import numpy as np
import pytest

from data_fixtures import make_omniglot_tree, run_script
from pymeta.metalearners import FOMAMLMetaLearner
from pymeta.networks import make_omniglot_cnn_model
from pymeta.tasks.omniglot_tasks import create_omniglot_task_distribution


@pytest.mark.parametrize("fmt", ["pkl", "h5"])
def test_folder_to_trained_model(tmp_path, fmt):
    make_omniglot_tree(tmp_path / "omniglot", alphabets=(2, 2), chars_per_alphabet=10, drawings=15, size=16)
    out = tmp_path / f"omniglot.{fmt}"
    proc = run_script("make_omniglot_dataset.py", "-i", tmp_path / "omniglot", "-o", out, "--size", 16, "-q")
    assert proc.returncode == 0, proc.stderr
    np.random.seed(0)
    keras.utils.set_random_seed(0)
    train, val, test = create_omniglot_task_distribution(str(out), num_training_samples_per_class=1,
                                                         num_test_samples_per_class=5, num_training_classes=5,
                                                         meta_batch_size=4, num_train_characters=24,
                                                         num_val_characters=8)
    model = make_omniglot_cnn_model(5, input_shape=(16, 16, 1), filters=16)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    ml = FOMAMLMetaLearner(model, keras.optimizers.Adam(0.003))
    ml.initialize()
    test_tasks = test.sample_batch(20)
    before = ml.evaluate_tasks(test_tasks, 3, -1)[1].mean()
    for _ in range(40):
        ml.metatrain_step(train.sample_batch(), 3, -1)
    after = ml.evaluate_tasks(test_tasks, 3, -1)[1].mean()
    assert after > 0.2 and after >= before - 0.05, (before, after)


@pytest.mark.slow
def test_meta_test_script_reports_confidence_interval(tmp_path):
    """scripts/meta_test.py on a saved sinusoid model: MSE mean and 95% CI over the requested tasks."""
    from pymeta.config import RunConfig
    from pymeta.training import metatrain
    model = tmp_path / "model.h5"
    metatrain(RunConfig(dataset="sinusoid", num_train_samples_per_class=10, num_test_samples_per_class=50,
                        inner_batch_size=10, inner_lr=0.01, num_outer_metatraining_iterations=50,
                        test_every_k_iterations=50, num_validation_batches=1, model_save_filename=str(model),
                        progress=False, jit_compile="off"))  # a model to meta-test: XLA's compile time spared
    out = tmp_path / "r.json"
    proc = run_script("meta_test.py", "--model", model, "--dataset", "sinusoid", "--num_train_samples_per_class", 10,
                      "--num_test_samples_per_class", 50, "--inner_lr", 0.01, "--inner_batch_size", 10,
                      "--num_tasks", 60, "--num_inner_iterations", 5, "--output", out)
    assert proc.returncode == 0, proc.stderr
    r = json.load(open(out))
    assert r["metric"] == "mse" and r["num_tasks"] == 60 and r["mean"] > 0 and 0 < r["ci95"] < r["mean"]
    assert "95% CI" in proc.stdout
    bad = run_script("meta_test.py", "--model", tmp_path / "nope.h5", "--dataset", "sinusoid")
    assert bad.returncode == 2 and "no model file" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_meta_test_refuses_a_model_of_another_architecture(tmp_path):
    import pickle

    from data_fixtures import synthetic_omniglot_dict
    from pymeta.model_io import save_model
    from pymeta.networks import make_sinusoid_model
    data = tmp_path / "omniglot.pkl"
    with open(data, "wb") as f:
        pickle.dump(synthetic_omniglot_dict(alphabets=(30, 20), chars_per_alphabet=2, drawings=20, size=16), f)
    model = save_model(make_sinusoid_model(), tmp_path / "sinusoid.h5")
    proc = run_script("meta_test.py", "--model", model, "--dataset", "omniglot", "--data_path", data,
                      "--omniglot_protocol", "allcharacters", "--num_tasks", 10)
    assert proc.returncode == 2 and "another architecture" in proc.stderr and "Traceback" not in proc.stderr


def test_meta_test_adapts_imaml_models_with_the_proximal_objective(tmp_path):
    """--metamodel imaml adapts on loss + (lambda/2)||phi - theta||^2: the pull towards theta leaves
    the adapted MSE between no adaptation and plain adaptation (lambda 0) with the same steps."""
    from pymeta.cli.metatest import parse_args
    from pymeta.evaluation import meta_test
    from pymeta.model_io import save_model
    from pymeta.networks import make_sinusoid_model
    keras.utils.set_random_seed(0)
    model = save_model(make_sinusoid_model(), tmp_path / "model.h5")

    def mse(*extra):
        args = parse_args(["--model", str(model), "--dataset", "sinusoid", "--metamodel", "imaml",
                                  "--num_train_samples_per_class", "10", "--num_test_samples_per_class", "50",
                                  "--inner_lr", "0.02", "--num_tasks", "20", "--batch", "10",
                                  "--imaml_inner", "proximal", *extra])
        return meta_test(args)

    unadapted = mse("--num_inner_iterations", "0", "--imaml_lambda_reg", "0")["mean"]
    proximal = mse("--num_inner_iterations", "10", "--imaml_lambda_reg", "25")  # lr * lambda = 0.5
    plain = mse("--num_inner_iterations", "10", "--imaml_lambda_reg", "0")
    assert proximal["inner_objective"] == "proximal (lambda 25.0)" and plain["inner_objective"] == "task loss"
    assert plain["mean"] < 0.95 * proximal["mean"] and proximal["mean"] < 0.95 * unadapted, \
        (plain["mean"], proximal["mean"], unadapted)
    with pytest.raises(ValueError, match="imaml_lambda_reg"):
        mse("--imaml_lambda_reg", "-1")
    # a model trained in pull-back mode is evaluated with plain steps whatever lambda
    pullback = mse("--num_inner_iterations", "10", "--imaml_lambda_reg", "25", "--imaml_inner", "pullback")
    assert pullback["inner_objective"] == "task loss" and pullback["mean"] == plain["mean"]
