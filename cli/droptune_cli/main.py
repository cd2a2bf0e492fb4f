"""`droptune`: the local stack, and the user's journey from a dropped file to a prediction.

Exit codes: 0 success; 1 the operation failed (a rejected dataset, a failed job); 2 bad usage or
bad input (argparse's own code); 3 the stack or a required program is missing; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from droptune_local.emulators import EmulatorMissingError
from droptune_local.stack import StackConfig, StackError, down, status, up

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STACK = 3


def _config(args: argparse.Namespace) -> StackConfig:
    overrides = {}
    if getattr(args, "model", None):
        overrides["standin_model"] = args.model
    return StackConfig.from_environ(os.environ, **overrides)


def cmd_up(args: argparse.Namespace) -> int:
    config = _config(args)
    print(f"starting the local stack in {config.home} …", file=sys.stderr)
    state, started = up(config)
    if not started:
        print("the stack is already running; nothing to do", file=sys.stderr)
    for name, component in state.components.items():
        print(f"  {name:<10} {component.endpoint or '-':<28} log {component.log}", file=sys.stderr)
    print('connect with:  eval "$(droptune env)"', file=sys.stderr)
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    stopped = down(_config(args))
    print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running", file=sys.stderr)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    state, components = status(_config(args))
    if args.json:
        print(
            json.dumps(
                {
                    "running": bool(components) and all(c.state == "running" for c in components),
                    "project": state.project if state else None,
                    "bucket": state.bucket if state else None,
                    "components": [
                        {"name": c.name, "state": c.state, "endpoint": c.endpoint, "pid": c.pid, "log": c.log}
                        for c in components
                    ],
                },
                indent=2,
            )
        )
    elif not components:
        print("the local stack is not running (start it with: droptune up)")
    else:
        for c in components:
            print(f"{c.name:<10} {c.state:<10} {c.endpoint or '-':<28} pid {c.pid}")
    if not components:
        return EXIT_STACK
    return EXIT_OK if all(c.state == "running" for c in components) else EXIT_FAILED


def cmd_env(args: argparse.Namespace) -> int:
    state, _components = status(_config(args))
    if state is None:
        print("the local stack is not running (start it with: droptune up)", file=sys.stderr)
        return EXIT_STACK
    for key, value in sorted(state.environment().items()):
        print(f"export {key}={_shell_quote(value)}")
    return EXIT_OK


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="droptune",
        description="Drop a JSONL file in a bucket, get a tuned model deployed.",
        epilog="Exit codes: 0 ok, 1 failed, 2 bad usage or input, 3 stack not running or a program missing.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("up", help="start the local stack (a second `up` changes nothing)")
    p.add_argument(
        "--model",
        choices=("tiny", "smollm2"),
        help="local model behind every base model: tiny (tests, default) or smollm2 (the demo)",
    )
    p.set_defaults(handler=cmd_up)
    p = commands.add_parser("down", help="stop exactly the processes `up` started")
    p.set_defaults(handler=cmd_down)
    p = commands.add_parser("status", help="each component's state and endpoint")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_status)
    p = commands.add_parser("env", help="print export lines that point any client at the stack")
    p.set_defaults(handler=cmd_env)

    from droptune_cli import journey

    journey.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except (StackError, EmulatorMissingError) as error:
        print(f"droptune: {error}", file=sys.stderr)
        return EXIT_STACK
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
