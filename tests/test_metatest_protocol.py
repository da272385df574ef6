"""pymeta-metatest's protocol: `--pretrained NAME` takes the zoo row's model file and whole protocol
(flags given still win), the first line states the protocol, a model file's query count other than the
papers' 15 is warned about, and a missing model file is reported before TensorFlow is imported."""

import logging
import os
import subprocess
import sys

import pytest

from pymeta import zoo
from pymeta.cli.metatest import parse_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAML = os.path.join(REPO, "pretrained", "omniglot", "omniglot_imaml_5w1s.h5")


@pytest.fixture
def data_file(tmp_path):
    """A stand-in for the Omniglot data file: the protocol is resolved before anything reads it."""
    path = tmp_path / "omniglot.pkl"
    path.write_bytes(b"")
    return str(path)


def test_pretrained_takes_the_rows_whole_protocol(data_file):
    c = parse_args(["--pretrained", "omniglot_imaml_5w1s", "--data_path", data_file])
    row = zoo.metatest_flags("omniglot_imaml_5w1s")
    assert os.path.samefile(c.model, IMAML)
    for name, value in row.items():
        if name != "model":
            assert getattr(c, name) == value, name
    assert c.num_test_samples_per_class == 15  # the table's, not the 5 the model file records


def test_pretrained_result_key_and_given_flags_win(data_file):
    keys = [r["key"] for r in zoo.model_entry("omniglot_imaml_5w1s")["results"]]
    assert len(keys) > 1
    c = parse_args(["--pretrained", f"omniglot_imaml_5w1s:{keys[1]}", "--data_path", data_file, "--num_tasks", "7"])
    assert c.num_tasks == 7
    assert c.num_train_samples_per_class == zoo.metatest_flags("omniglot_imaml_5w1s", keys[1])[
        "num_train_samples_per_class"]


@pytest.mark.parametrize("argv, message", [
    (["--pretrained", "no_such_model"], "unknown pretrained model 'no_such_model'"),
    (["--pretrained", "omniglot_imaml_5w1s", "--model", IMAML], "not both"),
    ([], "--model is required"),
])
def test_bad_requests_are_one_line_errors(argv, message):
    with pytest.raises(ValueError) as e:
        parse_args(argv)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_protocol_line_comes_first_and_a_models_query_count_is_warned_about(data_file, caplog):
    with caplog.at_level(logging.INFO, logger="pymeta"):
        c = parse_args(["--model", IMAML, "--data_path", data_file])
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("meta-test protocol (flags): omniglot test split, 5-way* 1-shot*, "
                               f"{c.num_test_samples_per_class} queries per class*")
    assert c.num_test_samples_per_class == 5  # what the model file records: the trap the warning names
    assert any("papers report 15" in line for line in lines)


def test_a_missing_model_file_is_reported_before_tensorflow_is_imported(tmp_path):
    code = ("import sys; from pymeta.cli.metatest import parse_args\n"
            "try:\n    parse_args(['--model', sys.argv[1]])\n"
            "except FileNotFoundError as e:\n    print(str(e))\n"
            "print('tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nothing.h5")], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.stdout.splitlines() == [f"no model file at {str(tmp_path / 'nothing.h5')!r}", "False"]


def test_a_missing_data_file_names_the_file_the_preparation_script_writes(tmp_path):
    from pymeta.registry import check_data_file
    with pytest.raises(FileNotFoundError) as e:
        check_data_file("miniimagenet", str(tmp_path / "none.h5"))
    assert "datasets/miniimagenet/miniimagenet.h5" in str(e.value) and "make_miniimagenet_dataset.py" in str(e.value)
    assert check_data_file("sinusoid") is None and check_data_file("navigation2d") is None


def test_sinusoid_protocol_line_states_points_not_classes():
    """Sinusoid regression has no classes: the line names support and query points, no way or batch-norm mode."""
    from pymeta.cli.metatest import protocol_line
    from pymeta.config import MetaTestConfig
    line = protocol_line(MetaTestConfig(dataset="sinusoid", num_train_samples_per_class=10,
                                        num_test_samples_per_class=100, num_tasks=7),
                         from_file={"num_train_samples_per_class"})
    assert "10 support points*, 100 query points, " in line and "7 tasks" in line
    assert "way" not in line and "transductive" not in line
