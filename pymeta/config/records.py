"""What a run writes down about itself: the settings a checkpoint must share with the run that resumes
it (`run_identity`), the settings a model file records about its training (`model_settings`) and
their use as meta-test defaults (`apply_model_settings`), the files next to the model
(`artifact_path`). Which fields go where is declared on the fields (`identity`, `record`)."""

import dataclasses
import os
from typing import Any, Collection, Dict, Mapping, Optional, Tuple

from pymeta.config.fields import fields_with
from pymeta.config.sections import MetaTestConfig, RunConfig, RunSections

# the settings a checkpoint must share with the run that resumes it
RUN_IDENTITY = tuple(name for name, identity in fields_with(RunConfig, "identity").items() if identity)
# what a model file records about its training (RunConfig fields), and the meta-test flag each one is the
# default of (None: recorded for the reader only); model files of every pymeta version use these names
_META_TEST_FIELDS = {f.name for f in dataclasses.fields(MetaTestConfig)}
MODEL_SETTINGS: Dict[str, Optional[str]] = {
    name: (None if record == "reader" else name if record == "flag" else record)
    for name, record in fields_with(RunConfig, "record").items()}
assert all(v is None or v in _META_TEST_FIELDS for v in MODEL_SETTINGS.values()), MODEL_SETTINGS


def run_identity(s: RunSections) -> Dict[str, Any]:
    """The settings of run `s` (`RunConfig.sections()`) a checkpoint records and a resuming run must
    share, and the model file's name (`model_file`, extension included)."""
    values = s.values()
    return {**{k: values[k] for k in RUN_IDENTITY}, "model_file": os.path.basename(s.run.model_save_filename)}


def default_run_identity() -> Dict[str, Any]:
    """`run_identity` of a run with every default: what a setting added after a checkpoint was written
    was in that run."""
    return run_identity(RunConfig().sections())


def artifact_path(model_save_filename: str, suffix: str) -> str:
    """A file next to the model: saved/model.h5 -> saved/model_<suffix>."""
    return f"{os.path.splitext(model_save_filename)[0]}_{suffix}"


def model_settings(s: RunSections, inner_optimizer: Optional[str] = None, **resolved: Any) -> Dict[str, Any]:
    """The settings a model file of run `s` records (JSON-able). inner_optimizer: the one the run
    actually used ('sgd' / 'adam'), recorded instead of 'auto'; `resolved`: other values the run
    resolved (e.g. RL's horizon and outer optimizer), recorded instead of the config's."""
    from pymeta import __version__
    values = s.values()
    settings = {k: values[k] for k in MODEL_SETTINGS}
    if inner_optimizer:
        settings["inner_optimizer"] = inner_optimizer
    settings.update({k: v for k, v in resolved.items() if k in MODEL_SETTINGS})
    settings["pymeta_version"] = __version__
    return settings


# the meta-test protocol a model file records (scripts/choose_test_steps.py), `metatest_<field>`: when a
# model file records one, it is that meta-test flag's default instead of the training's value. The step
# count is the one chosen on the validation tasks; the shots and inner batch are those it was chosen with
# (Reptile trains with 15 shots per class and is meta-tested 1-shot with the same weights)
CHOSEN_TEST_STEPS = "metatest_num_inner_iterations"
METATEST_PROTOCOL: Dict[str, str] = {
    CHOSEN_TEST_STEPS: "num_inner_iterations",
    "metatest_num_train_samples_per_class": "num_train_samples_per_class",
    "metatest_inner_batch_size": "inner_batch_size"}


def apply_model_settings(c: MetaTestConfig, settings: Mapping[str, Any],
                         given: Collection[str] = ()) -> Tuple[MetaTestConfig, Dict[str, Any]]:
    """(config, taken): `c` with the meta-test fields that a model file's `settings` know replaced by
    the recorded values, except those in `given` (set explicitly); `taken` lists the replaced ones."""
    taken = {}
    for key, field_name in MODEL_SETTINGS.items():
        if field_name and key in settings and field_name not in given:
            taken[field_name] = settings[key]
    for key, field_name in METATEST_PROTOCOL.items():
        if key in settings and field_name not in given:
            taken[field_name] = settings[key]
    return dataclasses.replace(c, **taken), taken
