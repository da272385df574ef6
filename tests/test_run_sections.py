"""A run's settings split by concern (`RunConfig.sections()`): every flag in exactly one section with its
value, and the run code reading the sections, never the flat `RunConfig` (only the entry points,
`pymeta.training.metatrain` / `setup_run`, take one and split it); mypy then rejects a field read from
the wrong section."""

import ast
import dataclasses
import glob
import os
import subprocess
import sys

import pytest

from pymeta.config import RunConfig, RunSections, run_identity
from pymeta.config.sections import AlgorithmSection, RunSection, TaskConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the code past the command line: it reads the sections it needs
RUN_CODE = sorted(glob.glob(os.path.join(ROOT, "pymeta", "run", "*.py"))) + [
    os.path.join(ROOT, "pymeta", name) for name in ("rl/training.py", "runtime.py", "metalearner_factory.py")]


def test_every_flag_is_in_exactly_one_section_with_its_value():
    c = RunConfig(dataset="sinusoid", meta_batch_size=7, imaml_cg_steps=3, seqfomaml_sequence_length=4,
                  max_kl=0.02, save_every_k_iterations=9, inner_lr=0.5)
    s = c.sections()
    names = [f.name for section in dataclasses.fields(RunSections)
             for f in dataclasses.fields(getattr(s, section.name))]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(RunConfig))  # each once
    assert s.values() == dataclasses.asdict(c)
    assert (s.algorithm.meta_batch_size, s.imaml.imaml_cg_steps, s.seqfomaml.seqfomaml_sequence_length,
            s.rl.max_kl, s.run.save_every_k_iterations, s.task.inner_lr) == (7, 3, 4, 0.02, 9, 0.5)
    assert type(s.task) is TaskConfig and type(s.algorithm) is AlgorithmSection and type(s.run) is RunSection
    s.run.save_every_k_iterations = 1  # a copy: the flat record stays as it was
    assert c.save_every_k_iterations == 9
    assert run_identity(s)["model_file"] == "model.h5" and run_identity(s)["meta_batch_size"] == 7


def test_the_resolved_values_live_in_their_sections():
    s = RunConfig(dataset="omniglot", num_output_classes=5, num_train_samples_per_class=1,
                  model_save_filename="saved/m.keras").sections()
    assert s.task.resolved_inner_batch_size() == 5  # N*K
    assert s.run.resolved_run_dir() == "saved/m.keras_run"
    assert not s.algorithm.resolved_jit_compile(s.task.dataset)  # auto: sinusoid only
    assert s.algorithm.resolved_jit_compile("sinusoid")


def _names_of_runconfig(path):
    tree = ast.parse(open(path).read(), path)
    return [node.lineno for node in ast.walk(tree)
            if (isinstance(node, ast.Name) and node.id == "RunConfig")
            or (isinstance(node, ast.Attribute) and node.attr == "RunConfig")
            or (isinstance(node, ast.alias) and node.name.split(".")[-1] == "RunConfig")
            or (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value == "RunConfig")]


def test_the_run_code_takes_sections_not_the_flat_config():
    """No run module imports, annotates or builds a `RunConfig`: it receives the sections it reads."""
    assert len(RUN_CODE) > 10 and all(os.path.exists(p) for p in RUN_CODE)
    found = {os.path.relpath(p, ROOT): lines for p in RUN_CODE if (lines := _names_of_runconfig(p))}
    assert not found, f"run code naming RunConfig (file: lines): {found}"
    # the check sees what it looks for: the entry point takes a RunConfig
    assert _names_of_runconfig(os.path.join(ROOT, "pymeta", "training.py"))


def test_mypy_rejects_a_field_read_from_the_wrong_section(tmp_path):
    pytest.importorskip("mypy")
    probe = tmp_path / "probe.py"
    probe.write_text("from pymeta.config.sections import RunSections\n\n\n"
                     "def size(s: RunSections) -> int:\n    return s.algorithm.meta_batch_size\n\n\n"
                     "def wrong(s: RunSections) -> int:\n    return s.task.meta_batch_size\n")
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--follow-imports=silent",
                           "--ignore-missing-imports", "--cache-dir", str(tmp_path / "cache"), str(probe)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.stdout.splitlines() == [f'{probe}:9: error: "TaskConfig" has no attribute "meta_batch_size"  '
                                        '[attr-defined]'], done.stdout + done.stderr
