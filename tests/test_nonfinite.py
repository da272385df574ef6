"""Silent NaN through the Python API (issue #38, item 6): a NaN or infinite learning rate (pymeta.optim's
rules, a Keras optimizer given as the inner or the outer one, a schedule), iMAML's lambda_reg, TRPO's
max_kl, a regression target, or an input given to `task.evaluate` is refused where it enters, with a
one-line ValueError naming it, before any weight changes. Before these checks each of them trained on and
turned the weights to NaN (or evaluated NaN) without an error."""

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf

from pymeta import optim
from pymeta.metalearners import FOMAMLMetaLearner, MAMLMetaLearner, ReptileMetaLearner, iMAMLMetaLearner
from second_order_helpers import ArrayTask, mlp

BAD = [float("nan"), float("inf"), -float("inf")]


def refused(match, fn, *args, **kwargs):
    """fn(*args, **kwargs) raises a one-line ValueError whose message matches `match`."""
    with pytest.raises(ValueError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value), str(info.value)
    return str(info.value)


def regression_model(inner=None):
    model = mlp([2, 5, 1], activation="tanh")
    model.compile(optimizer=inner if inner is not None else keras.optimizers.SGD(0.1), loss="mse")
    return model


def weights(model):
    return [w.copy() for w in model.get_weights()]


def assert_unchanged(model, before):
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def regression_task(rng, bad_target=None, bad_input=None, where="support"):
    x, y = rng.normal(size=(6, 2)).astype(np.float32), rng.normal(size=(6, 1)).astype(np.float32)
    qx, qy = rng.normal(size=(4, 2)).astype(np.float32), rng.normal(size=(4, 1)).astype(np.float32)
    if bad_target is not None:
        (y if where == "support" else qy)[1, 0] = bad_target
    if bad_input is not None:
        (x if where == "support" else qx)[2, 1] = bad_input
    return ArrayTask(x, y, qx, qy)


# --- learning rates and the other step sizes -------------------------------------------------------------
@pytest.mark.parametrize("bad", BAD)
def test_pymeta_optim_rules_refuse_non_finite_settings(bad):
    anchor = [tf.zeros([2])]
    refused(r"pymeta.optim.sgd: learning_rate must be a finite number >= 0, got", optim.sgd, bad)
    refused(r"pymeta.optim.adam: learning_rate must be a finite number >= 0", optim.adam, bad)
    refused(r"pymeta.optim.adam: beta_1 must be a finite number >= 0 and < 1", optim.adam, 0.1, beta_1=bad)
    refused(r"pymeta.optim.adam: epsilon must be", optim.adam, 0.1, epsilon=bad)
    refused(r"add_proximal_gradient: strength must be a finite number >= 0",
            optim.add_proximal_gradient, anchor, bad)


def test_pymeta_optim_rules_keep_their_finite_behaviour():
    """The checks refuse only what cannot be a step size: 0 (no step) and finite rates still work, and
    the update is the closed form -lr g."""
    g, p = [tf.constant([1.0, -2.0])], [tf.constant([0.5, 0.5])]
    for lr in (0.0, 0.25):
        updates, _ = optim.sgd(lr).update(g, optim.EmptyState(), p)
        np.testing.assert_allclose(updates[0].numpy(), [-lr, 2 * lr])
    assert optim.adam(0.1, beta_1=0.0).config["beta_1"] == 0.0
    refused(r"beta_2 must be a finite number >= 0 and < 1, got 1.0", optim.adam, 0.1, beta_2=1.0)
    refused(r"learning_rate must be a finite number >= 0, got -0.1", optim.sgd, -0.1)
    refused(r"learning_rate must be a finite number >= 0, got '0.1'", optim.sgd, "0.1")


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("cls", [FOMAMLMetaLearner, ReptileMetaLearner, MAMLMetaLearner])
def test_a_non_finite_outer_learning_rate_is_refused_by_the_meta_learner(cls, bad):
    model = regression_model()
    before = weights(model)
    message = refused(r"the outer optimizer's learning_rate \(SGD\) must be a finite number >= 0",
                      cls, model, keras.optimizers.SGD(bad))
    assert f"got {float(np.float32(bad))}" in message
    refused(r"the outer optimizer's learning_rate \(Adam\)", cls, model, keras.optimizers.Adam(bad))
    assert_unchanged(model, before)


def test_an_outer_schedule_is_checked_at_its_current_step():
    """A schedule's learning rate is checked where the meta-learner receives it (its value at the
    optimizer's current step, here 0): inf refused, a finite decay accepted."""
    model = regression_model()
    before = weights(model)
    bad = keras.optimizers.schedules.ExponentialDecay(float("inf"), decay_steps=10, decay_rate=0.5)
    refused(r"the outer optimizer's learning_rate \(Adam\) must be a finite number >= 0, got inf",
            FOMAMLMetaLearner, model, keras.optimizers.Adam(bad))
    good = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=10, decay_rate=0.5)
    FOMAMLMetaLearner(model, keras.optimizers.Adam(good))
    assert_unchanged(model, before)


def test_an_outer_optimizer_must_be_a_keras_optimizer():
    """The outer optimizer is declared a Keras optimizer (anything else is an `outer_step=`): another
    object is refused at once, in one line, instead of failing at the first step."""
    with pytest.raises(TypeError, match=r"^the outer optimizer must be a Keras optimizer .*, got object$"):
        FOMAMLMetaLearner(regression_model(), object())


@pytest.mark.parametrize("bad", BAD)
def test_a_non_finite_inner_learning_rate_is_refused(bad):
    """The inner optimizer the model was compiled with, or one passed to the meta-learner."""
    model = regression_model(inner=keras.optimizers.SGD(bad))
    before = weights(model)
    refused(r"the inner optimizer's learning_rate \(SGD\) must be a finite number >= 0",
            FOMAMLMetaLearner, model, keras.optimizers.Adam(0.01))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    refused(r"the inner optimizer's learning_rate \(Adam\)", ReptileMetaLearner, model,
            keras.optimizers.SGD(1.0), inner_optimizer=keras.optimizers.Adam(bad))
    assert_unchanged(model, before)


@pytest.mark.parametrize("name,bad", [("lambda_reg", float("inf")), ("lambda_reg", float("nan")),
                                      ("lambda_reg", 0.0), ("cg_damping", float("inf")),
                                      ("lam_damping", float("inf")), ("cg_tol", float("nan"))])
def test_imaml_refuses_non_finite_strengths(name, bad):
    model = regression_model()
    before = weights(model)
    rule = "> 0" if name == "lambda_reg" else ">= 0"
    refused(rf"^{name} must be a finite number {rule}, got", iMAMLMetaLearner, model,
            keras.optimizers.Adam(0.01), **{name: bad})
    assert_unchanged(model, before)


@pytest.mark.parametrize("bad", BAD)
def test_trpo_refuses_a_non_finite_max_kl(bad):
    from pymeta.rl.trpo import TRPOStep
    refused(r"^max_kl must be a finite number > 0, got", TRPOStep, max_kl=bad)
    refused(r"^cg_damping must be a finite number >= 0, got", TRPOStep, cg_damping=bad)
    assert TRPOStep(max_kl=0.05).max_kl == 0.05


# --- one rule for a flag and its Python argument ----------------------------------------------------------
VALUES = [0.0, -1e-9, 1e-9, 2.0] + BAD
POSITIVE = [False, False, True, True, False, False, False]      # a finite number > 0
NON_NEGATIVE = [True, False, True, True, False, False, False]   # a finite number >= 0


def accepted(fn):
    """For each of VALUES, whether fn(value) accepts it (no ValueError)."""
    out = []
    for v in VALUES:
        try:
            fn(v)
            out.append(True)
        except ValueError:
            out.append(False)
    return out


def test_a_flag_and_its_python_argument_follow_one_rule():
    """The command line's check of a hyperparameter (pymeta.config.checks, before TensorFlow) accepts
    exactly the values its Python argument accepts (the rule is pymeta.core.bounds'). The learning rates
    differ at 0 only: a step of 0 is allowed in Python (no step), refused as a run's --inner_lr / --meta_lr
    (nothing would learn)."""
    from pymeta.config import MetaTestConfig, RunConfig
    from pymeta.config.checks import check_field
    from pymeta.rl.trpo import TRPOStep
    model = regression_model()

    def flag(name, config=RunConfig, **settings):
        return lambda v: check_field(config(**settings, **{name: v}), name)

    def imaml(argument):
        return lambda v: iMAMLMetaLearner(model, keras.optimizers.Adam(0.01), **{argument: v})

    cases = [("imaml_lambda_reg", flag("imaml_lambda_reg"), imaml("lambda_reg"), POSITIVE),
             ("imaml_cg_damping", flag("imaml_cg_damping"), imaml("cg_damping"), NON_NEGATIVE),
             ("imaml_lam_damping", flag("imaml_lam_damping"), imaml("lam_damping"), NON_NEGATIVE),
             ("imaml_cg_tol", flag("imaml_cg_tol"), imaml("cg_tol"), NON_NEGATIVE),
             ("max_kl", flag("max_kl", dataset="navigation2d", metamodel="maml"), lambda v: TRPOStep(max_kl=v),
              POSITIVE),
             ("meta-test imaml_lambda_reg", flag("imaml_lambda_reg", MetaTestConfig, model="m.h5"),
              lambda v: optim.add_proximal_gradient([tf.zeros([2])], v), NON_NEGATIVE),
             ("inner_lr", flag("inner_lr"), optim.sgd, NON_NEGATIVE),
             ("meta_lr", flag("meta_lr"), lambda v: FOMAMLMetaLearner(model, keras.optimizers.SGD(v)), NON_NEGATIVE)]
    for name, by_flag, by_python, expected in cases:
        assert accepted(by_python) == expected, name
        assert accepted(by_flag) == (POSITIVE if name.endswith("_lr") else expected), name


# --- task data: regression targets, and evaluate as fit_n_iterations ---------------------------------------
@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("where", ["support", "query"])
def test_non_finite_regression_targets_are_refused_before_training(bad, where):
    rng = np.random.default_rng(0)
    model = regression_model()
    ml = FOMAMLMetaLearner(model, keras.optimizers.Adam(0.01))
    ml.initialize()
    before = weights(model)
    task = regression_task(rng, bad_target=bad, where=where)
    ml.task_begin(task)
    refused(rf"^a task's {where} targets contain NaN or infinite values$", task.fit_n_iterations, model, 2, -1)
    assert_unchanged(model, before)
    # the fast path refuses the same task, theta unchanged
    refused(rf"^a task's {where} targets contain NaN", ml.metatrain_step,
            [regression_task(rng), copy.deepcopy(task)], 2, -1)
    assert_unchanged(model, before)
    for v, w in zip(ml.current_initial_parameters, before):
        np.testing.assert_array_equal(v, w)


def test_finite_targets_still_train():
    """The same task with finite targets trains: one SGD step matches the closed form."""
    rng = np.random.default_rng(0)
    model = mlp([2, 1], activation=None)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    task = regression_task(rng)
    (w0, b0) = model.get_weights()
    task.fit_n_iterations(model, 1, -1)
    x, y = task.get_train_set()
    residual = x @ w0 + b0 - y
    np.testing.assert_allclose(model.get_weights()[0], w0 - 0.1 * 2 / len(x) * x.T @ residual, rtol=1e-5)


@pytest.mark.parametrize("bad", BAD)
def test_evaluate_refuses_what_fit_n_iterations_refuses(bad):
    """task.evaluate accepted NaN inputs that fit_n_iterations refuses: both now give the same error,
    for the query set, the training set (evaluate_on_train) and, non-transductively, the support inputs."""
    rng = np.random.default_rng(0)
    model = regression_model()
    before = weights(model)
    for where in ("support", "query"):
        for kind in ("inputs", "targets"):
            task = regression_task(rng, **{("bad_input" if kind == "inputs" else "bad_target"): bad},
                                   where=where)
            fit_message = refused(rf"^a task's {where} {kind}", task.fit_n_iterations, model, 1, -1)
            if where == "query":
                assert refused("NaN", task.evaluate, model) == fit_message
            else:
                assert refused("NaN", task.evaluate, model, evaluate_on_train=True) == fit_message
                if kind == "inputs":
                    assert refused("NaN", task.evaluate, model, transductive=False) == fit_message
                else:  # the support targets do not enter a query evaluation
                    assert np.isfinite(task.evaluate(model, transductive=False)["loss"])
    assert_unchanged(model, before)
    good = regression_task(rng)
    x, y = good.get_test_set()
    expected = float(np.mean((model.predict(x, verbose=0) - y) ** 2))
    assert good.evaluate(model)["loss"] == pytest.approx(expected, rel=1e-5)
