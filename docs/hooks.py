"""Build hooks of the documentation site (``mkdocs.yml``: ``hooks``).

- The README is the site's home page and the benchmark reports are its benchmark pages: they are read
  from where they live in the repository at build time, never copied into ``docs/``.
- Links are written between the repository's files, so that they work on a code host
  (``docs/guide.md`` -> ``../benchmarks/UCI.md#energy``); on the site each is pointed at the page
  built from that file. A link to a file the site does not hold is left alone, so the strict build
  reports it.
- ``<!-- bnn-help: fit -->`` in a page becomes the output of ``bnn fit --help``, so the CLI page
  shows the options the command has.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent

#: repository files -> the site path they are built at (besides docs/ itself and the notebooks,
#: which mkdocs-jupyter's ``notebook_dirs`` mounts)
MOUNTS = {"README.md": "index.md"}
MOUNTED_FOLDERS = {"benchmarks": ("*.md", "*.png")}

_LINK = re.compile(r"(\]\()(?P<target><[^>]*>|[^)\s]+)(?P<rest>(?:\s+\"[^\"]*\")?\))")
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})")
_HELP = re.compile(r"<!--\s*bnn-help:\s*(?P<command>[\w-]*)\s*-->")


def on_files(files: Files, config) -> Files:
    for source, target in MOUNTS.items():
        files.append(File.generated(config, target, abs_src_path=str(ROOT / source)))
    for folder, patterns in MOUNTED_FOLDERS.items():
        for pattern in patterns:
            for path in sorted((ROOT / folder).glob(pattern)):
                files.append(File.generated(config, f"{folder}/{path.name}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    markdown = _HELP.sub(lambda m: _cli_help(m["command"]), markdown)
    return _relink(markdown, page.file, files)


def _relink(markdown: str, page_file: File, files: Files) -> str:
    """Point each link between repository files at the site path built from the linked file."""
    by_source = {os.path.realpath(f.abs_src_path): f for f in files if f.abs_src_path}
    here = Path(page_file.abs_src_path).parent
    page_dir = posixpath.dirname(page_file.src_uri)

    def replace(match: re.Match) -> str:
        target = match["target"].strip("<>")
        path, _, anchor = target.partition("#")
        if not path or re.match(r"^[a-z][a-z0-9+.-]*:", path) or path.startswith("/"):
            return match[0]
        linked = by_source.get(os.path.realpath(here / path))
        if linked is None:  # not a repository file that the site holds: mkdocs checks it as written
            return match[0]
        url = posixpath.relpath(linked.src_uri, page_dir or ".")
        return f"{match[1]}{url}{'#' + anchor if anchor else ''}{match['rest']}"

    out, fence = [], None
    for line in markdown.splitlines(keepends=True):
        opened = _FENCE.match(line)
        if fence is None and opened:
            fence = opened[2]
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            line = _LINK.sub(replace, line)
        out.append(line)
    return "".join(out)


def _cli_help(command: str) -> str:
    """The ``--help`` text of ``bnn`` or of one of its commands, as a code block."""
    from bnn.cli import main

    argv = [command, "--help"] if command else ["--help"]
    text = io.StringIO()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: the page does not depend on it
    try:
        with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
            main(argv)
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return f"```text\n$ bnn {' '.join(argv)}\n{text.getvalue().rstrip()}\n```"
