"""Print pip constraints that pin each direct dependency to its declared floor.

    python .ci/floors.py [EXTRA ...] > floors.txt
    pip install -c floors.txt -e ".[test]"

Reads ``[project] dependencies`` and the named optional-dependency groups of
pyproject.toml and turns every ``name>=X`` into ``name==X``; what those pull in
resolves to the newest versions that fit. A requirement without a ``>=`` floor
is an error, so every direct dependency has a floor that CI installs, and floors
that contradict each other fail the install instead of being lifted silently.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$")
FLOOR = re.compile(r"^>=\s*([^\s,]+)$")


#: Not floors: constraints that save pip's resolver minutes of backtracking, each
#: exactly what it would settle on anyway. s3fs's floor (2024.12.0) takes
#: aiobotocore < 3, whose newest 2.x (2.26.0) pins botocore (and boto3, which
#: moto needs) to 1.41.0-1.41.5; unhinted, pip walks back through hundreds of
#: boto3 releases to find one that fits.
HINTS = ["botocore>=1.41.0,<1.41.6", "boto3>=1.41.0,<1.41.6"]


def floors(extras: list[str]) -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    groups = project.get("optional-dependencies", {})
    requirements = list(project.get("dependencies", []))
    for extra in extras:
        if extra not in groups:
            sys.exit(f"floors.py: pyproject.toml has no optional-dependencies group {extra!r}")
        requirements += groups[extra]
    lines: list[str] = []
    for requirement in requirements:
        match = REQUIREMENT.match(requirement)
        if not match:
            sys.exit(f"floors.py: cannot read the requirement {requirement!r}")
        name, specifiers, marker = match.groups()
        lower = [m.group(1) for s in specifiers.split(",") if (m := FLOOR.match(s.strip()))]
        if len(lower) != 1:
            sys.exit(f"floors.py: {requirement!r} needs exactly one '>=' floor")
        lines.append(f"{name}=={lower[0]}{' ' + marker if marker else ''}")
    return lines


if __name__ == "__main__":
    print("\n".join(floors(sys.argv[1:]) + HINTS))
