"""`python -m app api|worker|migrate|dev`: the container contract's entry point."""

import argparse
import sys

ROLES = ("api", "worker", "migrate", "dev")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="Run one role of the workflow platform.")
    parser.add_argument("role", choices=ROLES)
    role = parser.parse_args(argv).role
    print(
        f"workflow-platform: not yet: the workflow engine that runs `{role}` lands with the workflow engine issue.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
