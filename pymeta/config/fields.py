"""Config fields that are also command-line flags: `option` declares one (default, help, choices,
aliases and what the run does with it), `define_flags` / `config_from_flags` / `flags_given` turn a
config dataclass into absl flags and back. What a field is for is declared on the field, never in a
separate list of names:

- identity (default True): a checkpoint records it and a resuming run must have the same value;
- record: a model file records it: "flag" (the default of the meta-test flag of the same name),
  "reader" (for the reader only) or the name of the meta-test flag it is the default of;
- param: the meta-learner constructor argument it is (for the algorithms of its section's
  `metamodels`; see `pymeta.metalearner_factory.metalearner_from_config`).
"""

import dataclasses
import sys
from typing import Any, Dict, Iterator, Optional, Tuple


def option(default: Any, help: str, choices: Optional[Tuple[str, ...]] = None, aliases: Tuple[str, ...] = (),
           identity: bool = True, record: Optional[str] = None, param: Optional[str] = None):
    """A config field that is also a command-line flag. `choices` are listed in the help and checked by
    `check_config` / `check_metatest_config` (one-line errors), not by the flag parser."""
    if choices:
        help = f"{help} ({', '.join(choices)})"
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "aliases": aliases,
                                                        "identity": identity, "record": record, "param": param})


def redefault(cls, name: str, default: Any):
    """Field `name` of `cls` with another default (same help text, choices and roles)."""
    base = {f.name: f for f in dataclasses.fields(cls)}[name]
    return dataclasses.field(default=default, metadata=base.metadata)


def own_fields(section) -> Iterator[dataclasses.Field]:
    """The fields a section class declares itself (not those it inherits)."""
    own = set(vars(section).get("__annotations__", {}))
    return (f for f in dataclasses.fields(section) if f.name in own)


def fields_with(cls, key: str) -> Dict[str, Any]:
    """{field name: metadata[key]} of the fields of `cls` whose `key` is set (not None / False)."""
    return {f.name: f.metadata.get(key) for f in dataclasses.fields(cls) if f.metadata.get(key)}


def define_flags(cls, flag_values=None, module_name: Optional[str] = None) -> None:
    """Define one absl flag per field of the dataclass `cls` (name, default, help, choices, aliases).

    module_name: the module the flags belong to in --help (default: the running program).
    """
    from absl import flags
    fv = flags.FLAGS if flag_values is None else flag_values
    module_name = module_name or sys.argv[0]
    for f in dataclasses.fields(cls):
        help_text = f.metadata["help"]
        if f.type is bool:
            flag = flags.BooleanFlag(f.name, f.default, help_text)
        elif f.type is int:
            flag = flags.Flag(flags.IntegerParser(), flags.ArgumentSerializer(), f.name, f.default, help_text)
        elif f.type is float:
            flag = flags.Flag(flags.FloatParser(), flags.ArgumentSerializer(), f.name, f.default, help_text)
        else:
            flag = flags.Flag(flags.ArgumentParser(), flags.ArgumentSerializer(), f.name, f.default, help_text)
        flags.DEFINE_flag(flag, fv, module_name=module_name)
        for alias in f.metadata["aliases"]:
            flags.DEFINE_alias(alias, f.name, flag_values=fv, module_name=module_name)


def config_from_flags(cls, flag_values=None):
    """An instance of the dataclass `cls` with the values of its flags."""
    from absl import flags
    fv = flags.FLAGS if flag_values is None else flag_values
    return cls(**{f.name: fv[f.name].value for f in dataclasses.fields(cls)})


def flags_given(cls, flag_values=None) -> set:
    """The fields of `cls` whose flag was given on the command line (an alias counts)."""
    from absl import flags
    fv = flags.FLAGS if flag_values is None else flag_values
    given = {f.name for f in dataclasses.fields(cls) if fv[f.name].present}
    for f in dataclasses.fields(cls):
        if any(fv[a].present for a in f.metadata["aliases"]):
            given.add(f.name)
    return given
