"""Docs that cannot rot: the code of the README and of the how-to pages runs, the site builds strictly,
every model file the docs name exists, and no documented command writes into pretrained/.

Conventions in the Markdown (HTML comments, invisible on the rendered page), each on its own line
right before a ```python block:

    <!-- docs-test: replace "range(500)" "range(3)" -->   run the block with this text substituted
    <!-- docs-test: skip -->                              do not run this block
    <!-- docs-test: needs saved/model.h5 -->              run after the README's quick start (tiny)

A page's blocks run one after another as one script, in a fresh folder, in a subprocess whose
`PYTHONPATH` is this checkout (so they import this pymeta, and the files they write go to a
temporary folder).
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")
README = os.path.join(REPO, "README.md")

HOW_TO_PAGES = ("own-arrays.md", "new-task-type.md", "own-objective.md", "gymnasium-task.md", "mpi.md",
                "bfloat16-threads.md", "meta-test.md")
# the README's two examples, on tiny settings (the README itself stays free of test markup)
README_REPLACEMENTS = (("range(1000)", "range(2)"),)
QUICK_START_ITERATIONS = ("--num_outer_metatraining_iterations=10000", "--num_outer_metatraining_iterations=20")

_FENCE = re.compile(r"^```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->\s*$")


def code_blocks(path):
    """[(language, code, directives)] of the fenced blocks of a Markdown file, in order; directives are
    the `docs-test:` comments on the lines right before the block."""
    blocks, lines, i = [], open(path, encoding="utf-8").read().split("\n"), 0
    while i < len(lines):
        m = _FENCE.match(lines[i].strip())
        if m is None:
            i += 1
            continue
        directives, j = [], i - 1
        while j >= 0 and _DIRECTIVE.match(lines[j].strip()):
            directives.insert(0, _DIRECTIVE.match(lines[j].strip()).group(1))
            j -= 1
        indent = len(lines[i]) - len(lines[i].lstrip())
        body, i = [], i + 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        blocks.append((m.group(1), "\n".join(body) + "\n", directives))
        i += 1
    return blocks


def _apply(code, directives):
    """The block's code with its `replace` directives applied; None if it is to be skipped."""
    for d in directives:
        if d == "skip":
            return None
        if d.startswith("replace "):
            old, new = shlex.split(d[len("replace "):])
            assert old in code, f"docs-test directive replaces {old!r}, which the block does not contain"
            code = code.replace(old, new)
    return code


def page_script(path, extra_replacements=()):
    """(script, needs) for a page: its Python blocks with their substitutions, and what they need."""
    parts, needs = [], set()
    for lang, code, directives in code_blocks(path):
        if lang != "python":
            continue
        needs.update(d.split(None, 1)[1] for d in directives if d.startswith("needs "))
        code = _apply(code, directives)
        if code is None:
            continue
        for old, new in extra_replacements:
            code = code.replace(old, new)
        parts.append(code)
    return "\n".join(parts), needs


def _env():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    return env


def _run(args, cwd, timeout=600):
    r = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def readme_quick_start_command():
    """The README's first quick-start command, without its install step, on 20 meta-iterations."""
    start = "pip install -e . && python example_metatrain.py --dataset=sinusoid"
    bash = [code.strip() for lang, code, _ in code_blocks(README) if lang == "bash"]
    first = next((code for code in bash if code.startswith(start)), None)
    assert first is not None, f"the README has no quick-start command starting {start!r}"
    assert QUICK_START_ITERATIONS[0] in first
    command = first.split("&&", 1)[1].replace(*QUICK_START_ITERATIONS)
    return [sys.executable if a == "python" else a for a in shlex.split(command)]


def run_quick_start(cwd):
    args = readme_quick_start_command()
    args[1] = os.path.join(REPO, args[1])  # example_metatrain.py, run from the temporary folder
    _run(args, cwd)
    assert os.path.isfile(os.path.join(cwd, "saved", "model.h5"))


# --- the code runs ---------------------------------------------------------------------------------------
def test_readme_test_command_is_ci_s():
    bash = [code.strip() for lang, code, _ in code_blocks(README) if lang == "bash"]
    assert 'python -m pip install -e ".[test]" && python -m pytest' in bash


@pytest.mark.slow
def test_readme_python_examples_run(tmp_path):
    script, _ = page_script(README, README_REPLACEMENTS)
    assert "task_begin" in script and "metatrain_step" in script, "the README's two examples"
    (tmp_path / "readme.py").write_text(script)
    r = _run([sys.executable, "readme.py"], tmp_path)
    assert "test MSE after 5 steps" in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("page", ("index.md",) + tuple(f"how-to/{p}" for p in HOW_TO_PAGES))
def test_page_runs(page, tmp_path):
    path = os.path.join(DOCS, page)
    script, needs = page_script(path)
    if not script.strip():
        pytest.skip(f"{page} has no Python to run")
    if "gymnasium" in script or "pymeta.rl" in script:
        pytest.importorskip("gymnasium", reason="the RL recipes need the rl extra (gymnasium)")
    if "distributed" in script:
        pytest.importorskip("mpi4py", reason="the MPI recipe needs the mpi extra (mpi4py)")
    if "saved/model.h5" in needs:
        run_quick_start(tmp_path)
        # the page's meta-test command, on 4 tasks
        for lang, code, _ in code_blocks(path):
            if lang == "bash" and "scripts/meta_test.py --model saved/model.h5" in code:
                args = shlex.split(code.replace("\\\n", " ").strip())
                args = [sys.executable if a == "python" else a for a in args]
                args[1] = os.path.join(REPO, args[1])
                args[args.index("--num_tasks") + 1] = "4"
                _run(args, tmp_path)
                assert os.path.isfile(tmp_path / "saved" / "metatest.json")
                break
        else:
            raise AssertionError(f"{page}: no meta-test command on saved/model.h5")
        script = script.replace('"--num_tasks", "100"', '"--num_tasks", "4"')
    (tmp_path / "page.py").write_text(script)
    _run([sys.executable, "page.py"], tmp_path)


# --- the docs are true to the repository -----------------------------------------------------------------
def _doc_files():
    files = [README]
    for folder, _, names in os.walk(DOCS):
        files += [os.path.join(folder, n) for n in names if n.endswith(".md")]
    return files


_PRETRAINED_PATH = re.compile(r"(?<![\w/.])pretrained/[\w./-]+\.(?:h5|json|png)")


def test_every_model_file_the_docs_name_exists():
    example = os.path.join(DOCS, "how-to", "add-to-zoo.md")  # names the files a reader is about to add
    missing = []
    for f in _doc_files():
        if f == example:
            continue
        for p in set(_PRETRAINED_PATH.findall(open(f, encoding="utf-8").read())):
            if not os.path.exists(os.path.join(REPO, p)):
                missing.append(f"{os.path.relpath(f, REPO)}: {p}")
    assert not missing, "named in the docs but not in the repository:\n" + "\n".join(sorted(missing))


_WRITES_INTO_PRETRAINED = re.compile(
    r"(--output|--plot|-o|--model_save_filename)[ =]\S*pretrained/"
    r"|\bcp\b[^\n]*\spretrained/\S*\s*$"  # a copy whose destination (the last word) is in pretrained/
    r"|open\([^)]*pretrained/[^)]*['\"]w['\"]"
    r"|savefig\([^)]*pretrained/")


def test_the_check_tells_copies_into_pretrained_from_copies_out_of_it():
    assert _WRITES_INTO_PRETRAINED.search("cp runs/m/model.h5 pretrained/omniglot/")
    assert not _WRITES_INTO_PRETRAINED.search("cp pretrained/omniglot/m.h5 runs/m/model.h5_run/")


def test_no_documented_command_writes_into_pretrained():
    """Runs write under runs/; copying a model into pretrained/ is the zoo's own documented step."""
    allowed = {os.path.join(DOCS, "how-to", "add-to-zoo.md")}
    offending = []
    for f in _doc_files():
        if f in allowed:
            continue
        for lang, code, _ in code_blocks(f):
            for line in code.replace("\\\n", " ").split("\n"):
                if _WRITES_INTO_PRETRAINED.search(line):
                    offending.append(f"{os.path.relpath(f, REPO)}: {line.strip()}")
    assert not offending, "documented commands writing into pretrained/:\n" + "\n".join(offending)


_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def test_every_figure_has_the_command_that_draws_it():
    """Each image of a page is named (its file name) in a code block of that page: the command that
    draws it, or a comment saying which run draws it under which name; and every image under docs/ is
    shown by some page."""
    missing, shown = [], set()
    for f in _doc_files():
        text = open(f, encoding="utf-8").read()
        code = "\n".join(block for _, block, _ in code_blocks(f))
        for target in _IMAGE.findall(text):
            if target.startswith(("http://", "https://")):
                continue
            shown.add(os.path.normpath(os.path.join(os.path.dirname(f), target)))
            if os.path.basename(target) not in code:
                missing.append(f"{os.path.relpath(f, REPO)}: {target}")
    assert not missing, "figures without the command that draws them:\n" + "\n".join(missing)
    images = {os.path.join(folder, n) for folder, _, names in os.walk(DOCS) for n in names
              if n.endswith((".png", ".svg", ".jpg"))}
    assert images <= shown, f"images no page shows: {sorted(os.path.relpath(i, REPO) for i in images - shown)}"


def test_readme_links_resolve():
    """The README's relative links (into docs/) name files of the repository."""
    text = open(README, encoding="utf-8").read()
    links = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    assert links, "the README links into the docs"
    missing = [t for t in links if t and not os.path.exists(os.path.join(REPO, t))]
    assert not missing, f"README links to missing files: {missing}"


def test_troubleshooting_rows_have_one_form():
    """Every table row of the troubleshooting page is `| `message as printed` (remark) | what to do |`,
    so that entries are easy to add and to find with the browser's search."""
    text = open(os.path.join(DOCS, "troubleshooting.md"), encoding="utf-8").read()
    rows = [line for line in text.split("\n") if line.startswith("|")]
    bad = [r for r in rows if r not in ("| message (beginning) | what to do |", "|---|---|")
           and not re.fullmatch(r"\| `[^`]+`[^|]* \| .+ \|", r)]
    assert len(rows) > 30 and not bad, "rows not of the form | `message` | what to do |:\n" + "\n".join(bad)


def test_readme_is_short():
    assert len(open(README, encoding="utf-8").read().split("\n")) <= 251  # 250 lines + the final newline


# --- the site builds ---------------------------------------------------------------------------------------
def _help_flags(program):
    """The flags `program --help` lists (absl's format: `--name:` or `--[no]name:`)."""
    r = _run([sys.executable, os.path.join(REPO, program), "--help"], REPO, timeout=120)
    return set(re.findall(r"^\s+--(?:\[no\])?(\w+):", r.stdout, flags=re.M))


def test_cli_reference_lists_every_flag():
    """The generated reference (docs/hooks/cli_reference.py) against the programs' own --help."""
    sys.path.insert(0, os.path.join(DOCS, "hooks"))
    try:
        import cli_reference
    finally:
        sys.path.pop(0)
    page = cli_reference.render()
    sections = page.split("## Meta-test")
    for program, section in (("example_metatrain.py", sections[0]), ("scripts/meta_test.py", sections[1])):
        flags = _help_flags(program)
        assert len(flags) > 10, flags
        listed = set(re.findall(r"`--(\w+)`", section))
        assert flags <= listed, f"{program}: flags missing from the reference: {sorted(flags - listed)}"


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    if subprocess.run([sys.executable, "-c", "import mkdocs, material, mkdocstrings"],
                      capture_output=True).returncode != 0:
        pytest.skip("mkdocs, mkdocs-material or mkdocstrings is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    _run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], REPO, timeout=300)
    cli = (site / "reference" / "cli" / "index.html").read_text()
    assert "--num_outer_metatraining_iterations" in cli and "--num_tasks" in cli
    assert (site / "reference" / "api" / "metalearners" / "index.html").read_text().count("FOMAMLMetaLearner") > 1
