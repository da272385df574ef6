"""mkdocs hooks: the generated command-line reference, and the model zoo's pictures.

- `reference/cli.md` is rendered from the flag definitions (`cli_reference.render`) at every build.
- `model_zoo.md` is rendered from `pretrained/index.json` by `scripts/render_zoo.py`; where it has
  not been rendered, a stub stands in so that the navigation stays whole.
- The learning curves and figures under `pretrained/` are added to the site under the same paths
  (`pretrained/<benchmark>/...png`), so the pages link them as `../pretrained/...` without a copy in
  git; mkdocs --strict checks those links like any other.
"""

import os
import sys

from mkdocs.structure.files import File

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli_reference  # noqa: E402

ROOT = cli_reference.ROOT
PICTURES = (".png", ".svg")


ZOO_STUB = """# Model zoo

This page is rendered from `pretrained/index.json` by `python scripts/render_zoo.py` into
`docs/model_zoo.md`; this checkout has not rendered it yet.
"""


def on_files(files, config):
    files.append(File.generated(config, "reference/cli.md", content=cli_reference.render()))
    if files.get_file_from_path("model_zoo.md") is None:  # rendered by scripts/render_zoo.py
        files.append(File.generated(config, "model_zoo.md", content=ZOO_STUB))
    pretrained = os.path.join(ROOT, "pretrained")
    for folder, _, names in os.walk(pretrained):
        for name in sorted(names):
            if name.endswith(PICTURES):
                path = os.path.join(folder, name)
                uri = os.path.relpath(path, ROOT).replace(os.sep, "/")
                files.append(File.generated(config, uri, abs_src_path=path))
    return files
