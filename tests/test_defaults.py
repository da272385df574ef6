"""One source of defaults: a meta-learner built by the command line's factory with default flags is the
one built in Python with default arguments (same settings, the same first meta-step on a seeded toy
problem), and every flag that is a constructor argument has the constructor's default."""

import dataclasses
import inspect

import keras
import numpy as np
import pytest

from pymeta.config import RunConfig, resolve_rl_defaults
from pymeta.config.fields import own_fields
from pymeta.config.sections import ALGORITHM_SECTIONS
from pymeta.metalearner_factory import metalearner_class, metalearner_from_config
from pymeta.optimizer_defaults import default_meta_optimizer
from pymeta.registry import METAMODELS, RL_DATASETS
from second_order_helpers import ArrayTask, mlp


def test_every_constructor_flag_has_the_constructors_default():
    checked = 0
    for section in ALGORITHM_SECTIONS:
        for metamodel in section.metamodels:
            parameters = {}
            for cls in metalearner_class(metamodel).__mro__:  # **kwargs are passed on to the base classes
                if "__init__" in vars(cls):
                    for name, p in inspect.signature(cls.__init__).parameters.items():
                        parameters.setdefault(name, p)
            for f in own_fields(section):
                if f.metadata.get("param"):
                    assert f.metadata["param"] in parameters, (metamodel, f.name)
                    assert f.default == parameters[f.metadata["param"]].default, (metamodel, f.name)
                    checked += 1
    assert checked >= 8  # iMAML's six, SeqFOMAML's variant, persistent_inner_state of each


class FixedTasks:
    def __init__(self, tasks):
        self.tasks = tasks

    def sample_batch(self, batch_size):
        return self.tasks[:batch_size]


def toy_batch(metamodel):
    """A seeded meta-batch of three 3-way tasks (SeqFOMAML: one sequence of them)."""
    rng = np.random.RandomState(1)
    tasks = [ArrayTask(rng.randn(9, 2).astype(np.float32), rng.randint(0, 3, 9),
                       rng.randn(6, 2).astype(np.float32), rng.randint(0, 3, 6)) for _ in range(3)]
    if metamodel == "seqfomaml":
        from pymeta.core.task import TaskAsSequenceOfTasks
        return [TaskAsSequenceOfTasks(FixedTasks(tasks), 3, 3)]
    return tasks


def toy_model():
    model = mlp([2, 8, 3], out_activation="softmax", seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.3), loss="sparse_categorical_crossentropy")
    return model


def plain_settings(metalearner):
    """The meta-learner's settings: its attributes that are plain values (named tuples such as the
    inner optimizer: their plain fields)."""
    def plain(v):
        if hasattr(v, "_asdict"):
            return {k: plain(x) for k, x in v._asdict().items() if not callable(x)}
        return v
    return {k: plain(v) for k, v in vars(metalearner).items()
            if isinstance(v, (bool, int, float, str, tuple)) and not callable(v)}


@pytest.mark.parametrize("metamodel", METAMODELS)
def test_cli_factory_with_default_flags_is_the_python_default(metamodel):
    c = RunConfig(metamodel=metamodel)
    from_cli = metalearner_from_config(c.sections(), toy_model())
    in_python = metalearner_class(metamodel)(toy_model(), default_meta_optimizer(metamodel, c.meta_lr))
    assert type(from_cli) is type(in_python)
    assert plain_settings(from_cli) == plain_settings(in_python)
    after = []
    for ml in (from_cli, in_python):
        ml.initialize()
        ml.metatrain_step(toy_batch(metamodel), 3, -1)
        after.append([v.numpy() for v in ml.meta_variables])
    before = [v.numpy() for v in toy_model().trainable_variables]
    assert any(not np.allclose(a, b) for a, b in zip(after[0], before))  # the step did something
    for a, b in zip(*after):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_imaml_and_seqfomaml_python_defaults_are_the_better_measured_ones():
    """iMAML: the pull-back inner loop with damping 1 (98.46% on Omniglot, against 93% for proximal);
    SeqFOMAML: the paper's best variant."""
    imaml = metalearner_class("imaml")(toy_model(), keras.optimizers.Adam(0.001))
    assert (imaml.inner_mode, imaml.cg_damping) == ("pullback", 1.0)
    assert metalearner_class("seqfomaml")(toy_model(), keras.optimizers.Adam(0.001)).variant == "loss_after_each_task"


@pytest.mark.parametrize("dataset", RL_DATASETS)
@pytest.mark.parametrize("metamodel", ["maml", "fomaml"])
def test_rl_flags_resolve_to_the_library_defaults(dataset, metamodel):
    """The command line's RL run (default flags, the dataset's defaults for the flags not given) asks
    `pymeta.rl.problems.build_problem` for exactly what it builds with default arguments."""
    pytest.importorskip("gymnasium") if dataset != "navigation2d" else None
    from pymeta.rl import problems
    from pymeta.rl.training import build_run_problem
    captured = []
    real = problems.build_problem

    def capture(*args, **kwargs):
        captured.append(inspect.signature(real).bind(*args, **kwargs))
        raise _Stop

    c = resolve_rl_defaults(RunConfig(dataset=dataset, metamodel=metamodel), given=set())
    problems.build_problem = capture
    try:
        with pytest.raises(_Stop):
            build_run_problem(c.sections())
    finally:
        problems.build_problem = real
    bound = captured[0]
    bound.apply_defaults()
    python = inspect.signature(real).bind(dataset, metamodel)
    python.apply_defaults()
    cli, default = dict(bound.arguments), dict(python.arguments)
    cli_resolved = {**cli, "inner_lr": cli["inner_lr"], "meta_batch_size": cli["meta_batch_size"]}
    defaults = problems.DEFAULTS[dataset]
    # build_problem's documented choices for the arguments left at None
    default.update({k: defaults[k] for k in ("inner_lr", "meta_batch_size", "horizon") if default[k] is None})
    if default["outer_optimizer"] is None:
        default["outer_optimizer"] = "trpo" if metamodel == "maml" else "adam"
    cli_resolved.pop("seed"), default.pop("seed")
    cli_resolved.pop("env_kwargs"), default.pop("env_kwargs")
    assert cli.get("env_kwargs") in ({}, None)
    assert cli_resolved == default


class _Stop(Exception):
    pass


def test_flags_are_the_config_fields():
    """Every RunConfig field is a flag with its help text (nothing kept by hand elsewhere)."""
    from absl import flags

    from pymeta.config import define_flags
    fv = flags.FlagValues()
    define_flags(RunConfig, fv)
    for f in dataclasses.fields(RunConfig):
        assert fv[f.name].default == f.default and fv[f.name].help == f.metadata["help"]
    assert fv["model_save_filaname"].value == RunConfig().model_save_filename  # the original's alias
