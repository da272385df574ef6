"""The command-line reference page, generated from the flag definitions (never hand-copied).

It builds absl `FlagValues` the way `pymeta.cli.train` and `pymeta.cli.metatest` do: one call to
`pymeta.config.define_flags(cls, flag_values, module_name)` per settings class. `render()` returns
the page's Markdown; `python docs/hooks/cli_reference.py` prints it. The mkdocs hook `docs_hooks.py`
adds it to the site as `reference/cli.md` at build time, so the page cannot fall behind the code.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (program, its command, the settings classes whose fields are its flags, in pymeta.config)
PROGRAMS = (
    ("Meta-training", "python example_metatrain.py  |  pymeta-train", ("RunConfig", "CliOptions")),
    ("Meta-test", "python scripts/meta_test.py  |  pymeta-metatest", ("MetaTestConfig", "CliOptions")),
)


def program_flags(class_names):
    """The absl flags of a program whose flags are the fields of `class_names`: [(flag, aliases)]."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import pymeta.config as config  # no TensorFlow import
    from absl import flags

    fv = flags.FlagValues()
    for name in class_names:
        config.define_flags(getattr(config, name), fv, module_name="pymeta")  # the one call into pymeta.config
    all_flags = fv.get_flags_for_module("pymeta")
    aliases = {}
    primary = []
    for f in all_flags:
        if type(f).__name__ == "_FlagAlias":  # absl's DEFINE_alias: help "Alias for --target."
            target = f.help.split("--", 1)[1].rstrip(".")
            aliases.setdefault(target, []).append(f.name)
        else:
            primary.append(f)
    return [(f, sorted(aliases.get(f.name, []))) for f in primary]


def _default(f):
    if f.flag_type() == "bool":
        return "on" if f.default else "off"
    if f.default in ("", None):
        return "(empty)"
    return str(f.default)


def _cell(text):
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("|", "\\|").replace("\n", " "))


def render() -> str:
    lines = [
        "# Command-line reference",
        "",
        "Every flag of the two programs, generated from their definitions in `pymeta/config.py` when this",
        "site is built. Each flag is a field of a settings dataclass, so the same names work from Python:",
        "`pymeta.training.metatrain(RunConfig(dataset=\"sinusoid\", ...))`. A boolean flag `--x` is turned",
        "off with `--nox`. `--help` prints the same list in the terminal.",
        "",
        "RL runs replace some defaults when the flag is not given (meta-batch, inner learning rate, horizon,",
        "...): the help text of each flag says which; see [Datasets](../datasets.md#reinforcement-learning).",
        "",
    ]
    for title, command, classes in PROGRAMS:
        lines += [f"## {title}", "", f"`{command}`", "", "| flag | type | default | what it does |",
                  "|---|---|---|---|"]
        for f, aliases in program_flags(classes):
            name = f"`--{f.name}`" + "".join(f"<br>`--{a}`" for a in aliases)
            lines.append(f"| {name} | {f.flag_type()} | `{_cell(_default(f))}` | {_cell(f.help)} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render())
