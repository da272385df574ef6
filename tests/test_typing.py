"""The public contracts of the core, the inner loop, the optimizers, the Hessian-vector products, the
meta-learners, the RL library and the meta-training run (its settings' sections and the run code that
reads them) are typed, and `mypy` (configured in pyproject.toml, [tool.mypy]) finds no error in them."""

import importlib
import inspect
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the modules whose public contracts are typed (the `files` of [tool.mypy], as module names)
TYPED_MODULES = [
    "pymeta.core.compiled", "pymeta.core.counts", "pymeta.core.learner", "pymeta.core.meta_learner",
    "pymeta.core.outer_step", "pymeta.core.protocols", "pymeta.core.task", "pymeta.core.task_data",
    "pymeta.core.task_distribution", "pymeta.inner_loop", "pymeta.optim", "pymeta.hvp", "pymeta.mpi",
    "pymeta.metalearners.fomaml", "pymeta.metalearners.reptile", "pymeta.metalearners.maml",
    "pymeta.metalearners.imaml", "pymeta.metalearners.seq_fomaml", "pymeta.metalearners.distributed",
    "pymeta.rl.agent", "pymeta.rl.gym_tasks", "pymeta.rl.navigation", "pymeta.rl.objective",
    "pymeta.rl.policies", "pymeta.rl.problems", "pymeta.rl.returns", "pymeta.rl.sampler",
    "pymeta.rl.spaces", "pymeta.rl.task", "pymeta.rl.trpo", "pymeta.config.sections", "pymeta.run.divergence",
    "pymeta.run.experiment", "pymeta.run.full_disk", "pymeta.run.history", "pymeta.run.lock", "pymeta.run.loop",
    "pymeta.run.monitoring", "pymeta.run.progress_bar", "pymeta.run.resume", "pymeta.run.signals",
    "pymeta.run.summaries", "pymeta.run.supervised", "pymeta.rl.training", "pymeta.training", "pymeta.runtime",
    "pymeta.metalearner_factory",
]


def _missing_annotations(qualname, fn):
    """The parameters (and 'return') of a function that carry no annotation."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    missing = [p.name for i, p in enumerate(signature.parameters.values())
               if p.annotation is inspect.Parameter.empty and not (i == 0 and p.name in ("self", "cls"))]
    if signature.return_annotation is inspect.Signature.empty and fn.__name__ != "__init__":
        missing.append("return")
    return [f"{qualname}: {name}" for name in missing]


def _public_functions(module):
    """(qualified name, function) of the public functions, methods and properties a module defines."""
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            yield f"{module.__name__}.{name}", obj
        elif inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                if isinstance(member, property):
                    member = member.fget
                elif isinstance(member, (classmethod, staticmethod)):
                    member = member.__func__
                if inspect.isfunction(member) and member.__qualname__.startswith(obj.__qualname__ + "."):
                    yield f"{module.__name__}.{name}.{attr}", member


# Not yet annotated, on purpose: another branch changes the default values on these signature lines
# (issue #35's one source of defaults); annotate them once it has landed.
NOT_YET: set = set()  # public contracts still to annotate (none)


def test_public_contracts_are_annotated():
    """Every public function, method and property of the typed modules has annotated parameters and a
    return type (what mypy then checks)."""
    missing = []
    for module_name in TYPED_MODULES:
        module = importlib.import_module(module_name)
        for qualname, fn in _public_functions(module):
            if qualname not in NOT_YET:
                missing.extend(_missing_annotations(qualname, fn))
    assert not missing, "public contracts without type hints:\n" + "\n".join(missing)


def test_mypy_finds_no_error():
    """`python -m mypy` with the project's configuration (pyproject.toml [tool.mypy])."""
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.skip("mypy is not installed (pip install -e .[test] brings it): the typed modules are not checked")
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--cache-dir",
                           os.path.join(ROOT, ".mypy_cache")], cwd=ROOT, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, f"mypy found errors:\n{done.stdout}{done.stderr}"
