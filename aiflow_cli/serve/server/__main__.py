"""``python -m aiflow_cli.serve.server SETTINGS_JSON``: serve an export with these ServeSettings (how
:class:`aiflow_cli.serve.launch.ServerProcess` starts a server in a child process). Bad settings or a
bad export: one line on stderr and exit 2, as on the command line."""

from __future__ import annotations

import sys

from aiflow_cli.errors import AiflowError
from aiflow_cli.serve.launch import ServeSettings
from aiflow_cli.serve.server.run import serve


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m aiflow_cli.serve.server SETTINGS_JSON", file=sys.stderr)
        return 2
    try:
        serve(ServeSettings.model_validate_json(argv[0]))
    except AiflowError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
