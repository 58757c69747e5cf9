"""The `defect-gen` command: one module per subcommand (`add_parser`, `run`), and this glue.

Only this package parses arguments and knows flag names. A `DefectGenError` (bad config,
file, checkpoint, value) becomes one line on stderr and exit status 2; `--debug` shows the
traceback instead. A library error about an argument (`DefectGenError.with_params`) names
the Python parameter; the command's `FLAGS` renames it to the flag here, once.
"""

from __future__ import annotations

import argparse
import sys

from defect_gen import fsutil
from defect_gen.cli import bench, data, demo, evaluate, export, filter, info, mix, paint, sample, train
from defect_gen.errors import DefectGenError

# name -> (add the parser, run, the module whose FLAGS rename library parameters)
COMMANDS = {
    "train": (train.add_parser, train.run, train), "sample": (sample.add_parser, sample.run, sample),
    "info": (info.add_parser, info.run, info), "make-demo-data": (demo.add_parser, demo.run, demo),
    "export": (export.add_export_parser, export.run_export, export),
    "convert-published": (export.add_convert_parser, export.run_convert, export),
    "data": (data.add_parser, data.run, data), "bench": (bench.add_parser, bench.run, bench),
    "evaluate": (evaluate.add_parser, evaluate.run, evaluate), "filter": (filter.add_parser, filter.run, filter),
    "mix": (mix.add_parser, mix.run, mix), "paint": (paint.add_parser, paint.run, paint),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="defect-gen")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _, _ in COMMANDS.values():
        add(sub)
    # Built from the subcommands themselves, so the summary never falls behind them.
    parser.description = (f"Generate defect image + mask pairs with two diffusion models. Commands: "
                          f"{', '.join(sub.choices)}; `defect-gen COMMAND --help` for each.")
    return parser


def error_line(command: str, exc: DefectGenError) -> str:
    """The one line a library error becomes: parameters named as this command's flags."""
    return f"defect-gen {command}: error: {exc.render(getattr(COMMANDS[command][2], 'FLAGS', {}))}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fsutil.bound_remote_access()
    try:
        return COMMANDS[args.command][1](args)
    except DefectGenError as exc:
        if args.debug:
            raise
        print(error_line(args.command, exc), file=sys.stderr)
        return 2
    except OSError as exc:
        # A full disk or a read-only folder met wherever a command writes: the machine's
        # doing, not a bug. Other OSErrors keep their traceback.
        if args.debug or exc.errno not in fsutil.ENVIRONMENT_ERRNOS:
            raise
        print(f"defect-gen {args.command}: error: {fsutil.output_error('a file', exc, verb='access')}",
              file=sys.stderr)
        return 2
    except Exception as exc:  # only the kinds named below are the user's; the rest are bugs
        line = fsutil.remote_error_line(exc)
        if args.debug or line is None:
            raise
        print(f"defect-gen {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # What survives the interruption, where there is something to pick up again.
        hint = {"sample": "; the pairs written so far are kept: add --resume to the same command to finish"}
        print(f"defect-gen {args.command}: interrupted{hint.get(args.command, '')}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
