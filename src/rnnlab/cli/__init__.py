"""The ``rnnlab`` command: parse arguments, load config, call the library, show results.

Errors a user can cause are printed as one line (``rnnlab: error: …``) with exit status 2. The
package follows a command's path: ``parser`` reads the arguments, ``training_commands`` and
``inference_commands`` call the library, ``console`` shows a person the results and progress.
"""

from __future__ import annotations

import sys

from rnnlab.cli.console import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USER_ERROR
from rnnlab.cli.parser import build_parser, parse_command_line
from rnnlab.errors import RnnlabError
from rnnlab.memory import keep_freed_memory

__all__ = ["EXIT_INTERRUPTED", "EXIT_TERMINATED", "EXIT_USER_ERROR", "build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_command_line(parser, argv)
    keep_freed_memory()
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        return int(args.func(args) or 0)
    except RnnlabError as exc:
        print(f"rnnlab: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("rnnlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
