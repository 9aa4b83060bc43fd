from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from lowlabel import registry
from lowlabel.cli import app

runner = CliRunner()


def test_help_and_list_do_not_import_torch():
    code = "import sys; from lowlabel.cli import app; import lowlabel.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("preset", "expected"), [(None, "1"), ("0", "0")])
def test_entry_point_asks_torch_for_huge_pages_unless_the_user_chose(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if preset is not None:
        env["THP_MEM_ALLOC_ENABLE"] = preset
    code = ("import os, sys; sys.argv = ['lowlabel', 'list']; from lowlabel.cli import run\n"
            "try:\n    run()\nexcept SystemExit:\n    pass\n"
            "print(os.environ['THP_MEM_ALLOC_ENABLE'], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split()[-2:] == [expected, "False"]  # set before torch is imported


def test_installed_entry_point_answers_help_quickly():
    exe = os.path.join(os.path.dirname(sys.executable), "lowlabel")
    if not os.path.exists(exe):
        pytest.skip("the lowlabel entry point is not installed in this environment")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([exe, "--help"], capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0 and "demo" in done.stdout
    # CPU time rather than wall time, so a busy machine does not make it flaky (about 0.35 s measured here)
    cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu_seconds < 1.0
    same = subprocess.run([sys.executable, "-m", "lowlabel", "--help"], capture_output=True, text=True)
    assert same.stdout == done.stdout


def test_list_shows_all_eleven_with_honest_state():
    result = runner.invoke(app, ["list"], terminal_width=200)
    assert result.exit_code == 0
    for m in registry.METHODS.values():
        assert m.slug in result.stdout
    assert len(registry.METHODS) == 11
    assert result.stdout.count("planned") == sum(not m.ready for m in registry.METHODS.values())


def planned_slug() -> str | None:
    return next((m.slug for m in registry.METHODS.values() if not m.ready), None)


@pytest.mark.parametrize("args", [["demo", "{slug}"], ["train", "{slug}"], ["eval", "{slug}", "--checkpoint", "x.pt"]])
def test_planned_method_exits_2_without_output(args):
    slug = planned_slug()
    if slug is None:
        pytest.skip("every method is ready")
    code = f"import sys; sys.argv=['lowlabel', *{[a.format(slug=slug) for a in args]!r}]; " \
           "from lowlabel.__main__ import main; main()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert "planned" in done.stderr and done.stdout == ""


def test_unknown_method_and_world_exit_2():
    for argv in (["demo", "nope"], ["data", "preview", "nope"]):
        code = f"import sys; sys.argv=['lowlabel', *{argv!r}]; from lowlabel.__main__ import main; main()"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 2 and "unknown" in done.stderr


def test_train_rejects_unknown_config_key():
    ready = registry.ready()
    if not ready:
        pytest.skip("no ready method to configure yet")
    code = f"import sys; sys.argv=['lowlabel','train','{ready[0].slug}','--set','no.such=1']; " \
           "from lowlabel.__main__ import main; main()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown config key" in done.stderr and "valid keys" in done.stderr


def test_eval_defaults_to_the_data_and_config_the_run_recorded(tmp_path, monkeypatch):
    from lowlabel.engine.config import save_config
    from lowlabel.files import write_json
    from lowlabel.methods.completer import recipe

    run = tmp_path / "runs" / "completer" / "20260101-000000"
    cfg = recipe.Config()
    cfg.train.seed = 7
    save_config(cfg, run / "config.yaml")
    data = tmp_path / "my_views.mat"
    data.write_bytes(b"")
    write_json(run / "run.json", {"slug": "completer", "data": str(data)})
    checkpoint = run / "checkpoints" / "step_00000002.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"")
    seen = []
    monkeypatch.setattr(recipe, "evaluate", lambda c, *, checkpoint, data, runtime: seen.append((c, data)) or {})
    for target in (checkpoint, run / "model.pt"):
        result = runner.invoke(app, ["eval", "completer", "--checkpoint", str(target), "--device", "cpu"])
        assert result.exit_code == 0, result.output
    assert [(c.train.seed, d) for c, d in seen] == [(7, data), (7, data)]


def _commands(group: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """Every command under a click group (typer's own copy of click), as (words, command)."""
    found = []
    for name, command in group.commands.items():
        found.append(((*path, name), command))
        if hasattr(command, "commands"):
            found += _commands(command, (*path, name))
    return found


def test_help_shows_every_options_config_key():
    """Help texts name the config key an option sets, "(config: key)"; rich markup once swallowed them as "[...]"
    tags, so every command's rendered help must show as many as its options carry."""
    commands = _commands(typer.main.get_command(app))
    assert len(commands) > 30
    checked = 0
    for path, command in commands:
        expected = sum((p.help or "").count("config:") for p in command.params if p.param_type_name == "option")
        if not expected:
            continue
        shown = runner.invoke(app, [*path, "--help"], terminal_width=200, env={"COLUMNS": "200"}).output
        assert shown.count("config:") == expected, " ".join(path)
        checked += 1
    assert checked > 10
