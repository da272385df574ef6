"""Meta-learners by name (`--metamodel`): the classes, and the one builder behind the command line.
Every argument not given is the constructor's own default, so that a meta-learner built from the
command line with default flags is the one built in Python with default arguments (the flags'
defaults are checked against the constructors' by tests/test_defaults.py)."""

from typing import TYPE_CHECKING, Any, Dict

from pymeta.registry import METAMODELS

if TYPE_CHECKING:
    from pymeta.config.sections import RunSections


def metalearner_class(metamodel: str) -> Any:
    """The class behind `--metamodel=<metamodel>`."""
    from pymeta import metalearners
    classes = {"fomaml": metalearners.FOMAMLMetaLearner, "reptile": metalearners.ReptileMetaLearner,
               "imaml": metalearners.iMAMLMetaLearner, "maml": metalearners.MAMLMetaLearner,
               "seqfomaml": metalearners.SeqFOMAMLMetaLearner}
    if metamodel not in classes:
        raise ValueError(f"unknown metamodel {metamodel!r}: use one of {', '.join(METAMODELS)}")
    return classes[metamodel]


def build_metalearner(metamodel: str, model: Any, meta_optimizer: Any, **kwargs: Any) -> Any:
    """The meta-learner called `metamodel` on `model` (compiled with loss and inner optimizer);
    `kwargs` are its constructor's (e.g. jit_compile, lambda_reg, variant); the others keep their
    defaults."""
    cls = metalearner_class(metamodel)
    if kwargs.get("persistent_inner_state") and not cls.supports_persistent_inner_state:
        raise ValueError(f"--persistent_inner_state is for fomaml and reptile, not {metamodel}")
    return cls(model, meta_optimizer, **kwargs)


def constructor_arguments(s: "RunSections") -> Dict[str, Any]:
    """The meta-learner constructor arguments of run `s` (`RunConfig.sections()`): the fields of the
    algorithm sections that apply to its metamodel and name a constructor argument (`param`), and
    jit_compile as --jit_compile resolves it."""
    from pymeta.config.fields import own_fields
    from pymeta.config.sections import ALGORITHM_SECTIONS
    metamodel, holders = s.task.metamodel, (s.task, s.algorithm, s.imaml, s.seqfomaml)
    kwargs = {f.metadata["param"]: getattr(holder, f.name) for section in ALGORITHM_SECTIONS
              if metamodel in section.metamodels for holder in holders if isinstance(holder, section)
              for f in own_fields(section) if f.metadata.get("param")}
    kwargs["jit_compile"] = s.algorithm.resolved_jit_compile(s.task.dataset)
    return kwargs


def metalearner_from_config(s: "RunSections", model: Any) -> Any:
    """The meta-learner of run `s` on `model` (compiled with loss and inner optimizer), with the
    original's outer optimizer (`pymeta.optimizer_defaults.default_meta_optimizer`)."""
    from pymeta.optimizer_defaults import default_meta_optimizer
    anneal = s.run.num_outer_metatraining_iterations if s.algorithm.anneal_meta_lr else 0
    meta_optimizer = default_meta_optimizer(s.task.metamodel, s.algorithm.meta_lr, anneal)
    return build_metalearner(s.task.metamodel, model, meta_optimizer, **constructor_arguments(s))
