"""Each verb's settings model holds its defaults and checks once: the CLI reads every default from it,
stays thin, and the previous release's spellings still work with a deprecation line."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from aiflow_cli.api.bottleneck import BottleneckSettings, ExitsSettings
from aiflow_cli.api.compress import CompressSettings
from aiflow_cli.api.export import SpeculativeSettings, VerifySettings
from aiflow_cli.api.generate import GenerateSettings
from aiflow_cli.api.profile import ProfileSettings
from aiflow_cli.api.serve import (
    BenchSettings,
    DeviceSettings,
    LinkSettings,
    ServeSettings,
)
from aiflow_cli.api.split import PlanSettings
from aiflow_cli.cli import bottleneck, compress, profile, serve_pair, split
from aiflow_cli.cli.main import app
from aiflow_cli.errors import InputError

CLI = Path(__file__).resolve().parents[1] / "aiflow_cli" / "cli"
COMMANDS = [
    (profile.profile_cmd, ProfileSettings), (split.split_cmd, PlanSettings),
    (bottleneck.bottleneck_cmd, BottleneckSettings), (bottleneck.exits_cmd, ExitsSettings),
    (split.verify_cmd, VerifySettings), (split.speculative_cmd, SpeculativeSettings),
    (compress.compress_cmd, CompressSettings), (serve_pair.server_cmd, ServeSettings),
    (serve_pair.link_cmd, LinkSettings), (serve_pair.device_cmd, DeviceSettings),
    (serve_pair.generate_cmd, GenerateSettings), (serve_pair.bench_cmd, BenchSettings),
]
RENDERING = {"out", "plot", "as_json", "wide", "top"}  # how a result is shown: the command's own options


def _same(cli_default, field_default) -> bool:
    if cli_default == field_default:
        return True
    if cli_default is None and field_default in ([], None):  # repeatable options: none given
        return True
    if isinstance(cli_default, str) and isinstance(field_default, list):  # comma-separated lists
        return [type(v)(x) for v, x in zip(field_default, cli_default.split(","))] == field_default \
            and len(cli_default.split(",")) == len(field_default)
    return str(cli_default) == str(field_default)  # --k "4" read as the number 4


def _commands(group, path=()):
    for info in group.registered_commands:
        yield info.callback
    for sub in group.registered_groups:
        yield from _commands(sub.typer_instance)


def test_every_command_is_paired_with_a_settings_model():
    assert {getattr(c, "__wrapped__", c) for c in _commands(app)} == {getattr(c, "__wrapped__", c) for c, _ in COMMANDS}


@pytest.mark.parametrize("command, settings", COMMANDS, ids=lambda x: getattr(x, "__name__", ""))
def test_every_option_default_is_read_from_the_settings_model(command, settings):
    for name, param in inspect.signature(command).parameters.items():
        if name in RENDERING:
            continue
        assert name in settings.model_fields, f"{command.__name__}: --{name} is not a field of {settings.__name__}"
        if param.default in (inspect.Parameter.empty, ...):
            continue
        field_default = settings.model_fields[name].get_default(call_default_factory=True)
        assert _same(param.default, field_default), (name, param.default, field_default)
        assert settings.help(name), f"{settings.__name__}.{name} has no description for --help"


def test_no_cli_function_is_longer_than_60_lines():
    long = []
    for path in CLI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1 + len(node.decorator_list)
                if length > 60:
                    long.append(f"{path.name}:{node.name} ({length} lines)")
    assert not long, long


@pytest.mark.parametrize("settings, values, message", [
    (ServeSettings, {"directory": ".", "port": 0}, "--port must be at least 1, got 0"),
    (ServeSettings, {"directory": ".", "engine": "tgi"}, "--engine must be one of"),
    (ProfileSettings, {"model": "zoo:minilm-l6", "warmup": -1}, "--warmup must be 0 or more, got -1"),
    (BottleneckSettings, {"model": "m", "epochs": 0}, "--epochs must be at least 1, got 0"),
    (BottleneckSettings, {"model": "m", "exits": ["a"], "jpeg_quality": "0"}, "--jpeg-quality: qualities run from 1"),
    (BenchSettings, {"directory": ".", "link": ["1MB/s,20ms"], "ks": "1,99"}, "each k must be in 1..64"),
    (GenerateSettings, {"directory": ".", "server": "h:1", "prompt": ["x"], "k": "many"}, "--k 'many'"),
    (PlanSettings, {"model": "m", "device": Path("d.yaml")}, "--device and --server go together"),
])
def test_a_bad_setting_is_one_input_error_naming_its_flag(settings, values, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        settings(**values)


def test_a_settings_object_refuses_an_unknown_field():
    with pytest.raises(InputError, match="--batchsize: unknown setting"):
        ProfileSettings(model="zoo:minilm-l6", batchsize=2)


def test_list_settings_take_comma_separated_text_or_lists_alike():
    a = PlanSettings(model="m", device=Path("d"), server=Path("s"), bandwidth="1MB/s", server_batch="1,8,32")
    b = PlanSettings(model="m", device=Path("d"), server=Path("s"), bandwidth="1MB/s", server_batch=[1, 8, 32])
    assert a.server_batch == b.server_batch == [1, 8, 32]


def test_the_previous_bottleneck_spelling_still_runs_with_a_deprecation_line(runner):
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--bottleneck", "--cut", "block12", "--augment", "-1"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 2, result.stderr
    assert "deprecated" in lines[0] and "aiflow split bottleneck MODEL" in lines[0]
    assert "--augment must be 0 or more" in lines[1]


def test_the_previous_exits_spelling_routes_to_split_exits(runner):
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--exit", "block15", "--max-drop", "-1"])
    assert result.exit_code == 2 and "aiflow split exits MODEL" in result.stderr and "--max-drop" in result.stderr
