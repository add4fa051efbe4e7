"""The README's configuration reference, generated from Pulumi.yaml and the stack files.

`python -m tools.config_reference` (`make config-reference`) rewrites the table in README.md; a test fails when the
two disagree.
"""

from __future__ import annotations

import json

import yaml

from tools.mock_stack import PROJECT, ROOT, STACKS

README = ROOT / "README.md"
START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


def _cell(value) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text}`" if text != "" else '`""`'


def configuration_reference() -> str:
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    stacks = {
        stack: {
            key.removeprefix(f"{PROJECT}:"): value
            for key, value in yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"].items()
        }
        for stack in STACKS
    }
    rows = [
        "| key | type | default | " + " | ".join(STACKS) + " | meaning |",
        "|---|---|---|" + "---|" * len(STACKS) + "---|",
    ]
    for key, spec in declared.items():
        kind = spec["type"] + (f" of {spec['items']['type']}" if spec["type"] == "array" else "")
        default = _cell(spec["default"]) if "default" in spec else "required"
        per_stack = " | ".join(_cell(stacks[stack].get(key)) for stack in STACKS)
        meaning = spec["description"].replace("<", "&lt;").replace(">", "&gt;")
        rows.append(f"| `{key}` | {kind} | {default} | {per_stack} | {meaning} |")
    return "\n".join(rows)


def current_readme_table() -> str:
    text = README.read_text()
    return text[text.index(START) + len(START) : text.index(END)].strip()


def main() -> None:
    text = README.read_text()
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    README.write_text(f"{before}{START}\n{configuration_reference()}\n{END}{after}")
    print("README.md: configuration reference rewritten from Pulumi.yaml and the stack files")


if __name__ == "__main__":
    main()
