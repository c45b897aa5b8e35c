#!/usr/bin/env python3
"""Parses every Terraform file with python-hcl2 and checks that every checkov skip says why.

    check_iac_files.py FILE...     (.tf files and CloudFormation/SAM templates)

A `#checkov:skip=CKV_...:reason` comment needs a reason of a few words; a template's
`Metadata: checkov: skip:` entry needs an `id` and a `comment`. Run by scripts/check-infra.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import hcl2
import yaml

SKIP = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?$")


def check_tf(path: Path) -> list[str]:
    problems = []
    try:
        with path.open() as f:
            hcl2.load(f)
    except Exception as e:  # python-hcl2 raises lark errors of several kinds
        problems.append(f"{path}: does not parse as HCL2: {e}")
    for number, line in enumerate(path.read_text().splitlines(), 1):
        m = SKIP.search(line)
        if m and len((m.group(2) or "").split()) < 4:
            problems.append(f"{path}:{number}: checkov skip {m.group(1)} without a reason")
    return problems


def check_template(path: Path) -> list[str]:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load(path.read_text(), Loader=Loader)
    problems = []
    for name, resource in (template.get("Resources") or {}).items():
        skips = ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip") or []
        for skip in skips:
            if not skip.get("id") or len(str(skip.get("comment", "")).split()) < 4:
                problems.append(f"{path}: {name}: checkov skip {skip.get('id')} without a reason")
    return problems


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: check_iac_files.py FILE...", file=sys.stderr)
        return 2
    problems = []
    tf_files = 0
    for raw in paths:
        path = Path(raw)
        if path.suffix == ".tf":
            tf_files += 1
            problems += check_tf(path)
        else:
            problems += check_template(path)
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    print(f"iac-files: {tf_files} .tf files parsed, {len(paths) - tf_files} templates; "
          f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
