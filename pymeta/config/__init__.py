"""The settings of a meta-training run (`RunConfig`) and of a meta-test (`MetaTestConfig`), made of one
dataclass per concern (`pymeta.config.sections`). Each field's type, default and help text generate
the command-line flag of the same name (`pymeta.config.fields.define_flags`), so a flag and its default
are defined once; what a field is for (run identity, model-file record, constructor argument) is
declared on the field. `check_config` / `check_metatest_config` (`pymeta.config.checks`) reject
impossible settings up front with one-line messages naming the fix; `pymeta.config.records` holds what
checkpoints and model files record, `pymeta.config.stored` reads it back (checked like the flags). No
TensorFlow import here: `--help` stays fast."""

from pymeta.config.checks import (check_config, check_metatest_config, check_output_folders, check_ranks,
                                  env_kwargs, parse_step_sizes)
from pymeta.config.fields import config_from_flags, define_flags, flags_given, option
from pymeta.config.records import (MODEL_SETTINGS, RUN_IDENTITY, apply_model_settings, artifact_path,
                                   default_run_identity, model_settings, run_identity)
from pymeta.config.rl_defaults import RL_RUN_DEFAULTS, resolve_rl_defaults
from pymeta.config.sections import JIT_COMPILE, CliOptions, MetaTestConfig, RunConfig, RunSections, TaskConfig

__all__ = ["CliOptions", "JIT_COMPILE", "MODEL_SETTINGS", "MetaTestConfig", "RL_RUN_DEFAULTS", "RUN_IDENTITY",
           "RunConfig", "RunSections", "TaskConfig", "apply_model_settings", "artifact_path", "check_config",
           "check_metatest_config", "check_output_folders", "check_ranks", "config_from_flags",
           "default_run_identity", "define_flags", "env_kwargs", "flags_given", "model_settings", "option",
           "parse_step_sizes", "resolve_rl_defaults", "run_identity"]
