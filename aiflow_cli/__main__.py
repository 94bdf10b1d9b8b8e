from aiflow_cli.cli.main import run

run()
