"""The README tells the truth: every flag with its variable, every metric, every route."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from exporter.cli import cli
from testkit import REPO_ROOT
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar

README = (REPO_ROOT / "README.md").read_text()


def _serve_options() -> list[tuple[str, str]]:
    command = cli.commands["serve"]
    pairs = []
    for param in command.params:
        flag = max(param.opts, key=len) if param.opts else param.name
        pairs.append((str(flag), str(param.envvar)))
    return pairs


def test_every_flag_and_its_variable_is_in_the_readme() -> None:
    missing = [
        (flag, env) for flag, env in _serve_options()
        if f"`{flag}" not in README or f"`{env}`" not in README
    ]
    assert missing == []


def test_the_help_lists_the_variables_the_readme_names() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for _flag, env in _serve_options():
        assert env in result.output


def test_every_metric_is_documented(redis_server: RedisServer) -> None:
    with Sidecar(redis_server.url, "--queue", "q") as sidecar:
        sidecar.wait_ready()
        text = sidecar.get("/metrics").text
        names = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))
    assert len(names) > 20, names
    undocumented = sorted(
        n for n in names if f"`{n}`" not in README and f"`{n}_total`" not in README
    )
    assert undocumented == []


def test_two_commands_exist_and_are_executable() -> None:
    for script in ("scripts/demo", "scripts/test"):
        path = Path(REPO_ROOT / script)
        assert f"{script}" in README
        assert path.stat().st_mode & 0o111, f"{script} is not executable"
    assert "scripts/test" in (REPO_ROOT / ".ci/run").read_text()
