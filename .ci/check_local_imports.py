"""Refuse intra-package imports inside functions unless a comment says why.

The layering (``pyproject.toml``, ``[tool.importlinter]``) is checked on every
import; an import placed inside a function to dodge it, or to hide a circle, is
what this script catches. A lazy import that keeps ``import shmstore`` (or a
CLI command) light is fine, with a comment on the line above or on the line
itself.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def local_imports(path: Path) -> list[str]:
    source = path.read_text()
    lines = source.splitlines()
    problems = []
    for func in ast.walk(ast.parse(source)):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if not any(n == "shmstore" or n.startswith("shmstore.") for n in names):
                continue
            here = lines[node.lineno - 1]
            # A comment may sit above a block of imports (blank lines skipped).
            k = node.lineno - 2
            while k >= 0 and (
                not lines[k].strip() or lines[k].strip().startswith(("import ", "from "))
            ):
                k -= 1
            above = lines[k].strip() if k >= 0 else ""
            if "#" not in here and not above.startswith("#"):
                problems.append(f"{path}:{node.lineno}: import in a function, no comment says why")
    return problems


def main() -> int:
    problems = [p for f in sorted(Path("shmstore").glob("*.py")) for p in local_imports(f)]
    print("\n".join(problems) or "local imports: every one says why")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
