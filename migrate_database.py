"""The migration guide's command line, as written there:

    python3 migrate_database.py --phase N [--batch-size N]
    python3 migrate_database.py --validate

It does what `edu-migrate migrate --phase N` and `edu-migrate validate` do, with the URLs from
EDU_SOURCE_URL / EDU_TARGET_URL (or edu-migrate.toml, or the embedded server).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from edu_migrate.cli import main


def translate(argv: list[str]) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--phase", type=int, help="run one phase (1-5)")
    action.add_argument("--all", action="store_true", help="run every phase")
    action.add_argument("--validate", action="store_true", help="run the validation (Phase 6)")
    parser.add_argument("--batch-size", type=int, help="rows per COPY chunk")
    args = parser.parse_args(argv)
    if args.validate:
        return ["validate"]
    command = ["migrate", "--all"] if args.all else ["migrate", "--phase", str(args.phase)]
    if args.batch_size is not None:
        command += ["--batch-size", str(args.batch_size)]
    return command


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *translate(sys.argv[1:])]
    main()
