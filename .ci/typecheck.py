"""Type-check the `outbox` distribution as it is installed: `outbox`, plus the top-level
folders that [tool.setuptools.package-dir] maps into it (workers/ -> outbox.workers, ...).

mypy cannot see that mapping by itself: the editable install resolves it with an import
hook, which mypy does not run, and a plain `mypy outbox workers` would check workers/ as a
top-level `workers` package, so every `from outbox.workers import ...` would fail. Here each
file is handed to mypy under the module name the wheel gives it; errors point at the real
files. Options come from [tool.mypy]; extra arguments go to mypy (e.g. --strict).

    .venv/bin/python .ci/typecheck.py
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parent.parent


def sources(package_dirs: dict[str, str]) -> list[BuildSource]:
    found: dict[Path, str] = {}
    # Shortest package first, so a mapped sub-package (outbox.workers) wins over the
    # folder it would otherwise appear under.
    for package, folder in sorted(package_dirs.items(), key=lambda kv: kv[0].count(".")):
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[path] = ".".join((package, *parts))
    return [BuildSource(str(p.relative_to(ROOT)), m) for p, m in sorted(found.items())]


def main(argv: list[str]) -> int:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dirs = pyproject["tool"]["setuptools"]["package-dir"]
    # process_options reads [tool.mypy]; its own source list (the root package) is
    # replaced by the mapped one.
    _, options = process_options(
        ["--config-file", str(ROOT / "pyproject.toml"), *argv, "-p", "outbox"]
    )
    try:
        result = build.build(sources(package_dirs), options)
    except CompileError as e:
        print("\n".join(e.messages), file=sys.stderr)
        return 2
    for line in result.errors:
        print(line)
    errors = sum(1 for line in result.errors if ": error:" in line)
    files = len({line.split(":", 1)[0] for line in result.errors if ": error:" in line})
    if errors:
        print(f"Found {errors} errors in {files} files")
        return 1
    print("Success: no issues found")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
