"""The README's first command runs the demo: it must keep working, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pypdf
import pytest
from support import wait_until

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_demo_enqueues_offline_then_flushes_pdfs_to_disk(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "flush while offline: exit code 75" in result.stdout
    assert "rendered 3 PDFs for 3 jobs" in result.stdout
    pdfs = sorted((tmp_path / "demo-output" / "renders").glob("*.pdf"))
    assert [p.name for p in pdfs] == ["invoice-2026-005.pdf", "north-42.pdf", "south-7.pdf"]
    for pdf in pdfs:
        assert "Template:" in pypdf.PdfReader(pdf, strict=True).pages[0].extract_text()


def test_field_app_example_runs_against_the_sandbox(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "field_app.py"), "--sandbox"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "downloading -> done" in result.stdout
    assert (tmp_path / "renders" / "field-app-demo.pdf").exists()


def test_field_app_works_on_every_run(tmp_path: Path) -> None:
    """The second run finds the entry the first one finished, says where its PDF is and ends
    (it used to wait 60 s for a change that never came)."""
    runs = [
        subprocess.run(
            [sys.executable, str(EXAMPLES / "field_app.py"), "--sandbox"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for _ in range(2)
    ]
    pdf = tmp_path / "renders" / "field-app-demo.pdf"
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"PDF: {pdf}" in run.stdout
    assert "downloading -> done" in runs[0].stdout and "-> done" not in runs[1].stdout
    assert "still" not in runs[1].stdout
    assert "outbox.activity: done " in runs[0].stderr  # the app turned outbox's log on


def _outbox_executable() -> str:
    found = Path(sys.executable).parent / "outbox"
    assert found.exists(), found
    return str(found)


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Installed as the units' comments say (@OUTBOX@ replaced by the absolute path of
    outbox), each unit is one that systemd accepts, without a warning."""
    units = sorted((EXAMPLES / "systemd").iterdir())
    assert [u.name for u in units] == [
        "outbox-flush@.service",
        "outbox-flush@.timer",
        "outbox-run@.service",
    ]
    installed = []
    for unit in units:
        text = unit.read_text()
        assert "ExecStart=@OUTBOX@ " in text or unit.suffix == ".timer"
        target = tmp_path / unit.name.replace("@.", "@root.")
        target.write_text(text.replace("@OUTBOX@", _outbox_executable()))
        installed.append(str(target))
    result = subprocess.run(
        ["systemd-analyze", "verify", *installed], capture_output=True, text=True, timeout=120
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    run = (EXAMPLES / "systemd" / "outbox-run@.service").read_text()
    assert "RestartPreventExitStatus=77 78" in run and "loginctl enable-linger" in run
    flush = (EXAMPLES / "systemd" / "outbox-flush@.service").read_text()
    assert "After=network-online.target" in flush and "SuccessExitStatus=75\n" in flush


def test_systemd_verify_refuses_a_bare_command_name(tmp_path: Path) -> None:
    """The check above can fail: the old unit's `ExecStart=outbox ...` is refused."""
    unit = tmp_path / "bare@root.service"
    unit.write_text(
        (EXAMPLES / "systemd" / "outbox-run@.service").read_text().replace("@OUTBOX@", "outbox")
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "is not executable" in result.stderr


def test_networkmanager_hook_passes_shellcheck() -> None:
    hook = EXAMPLES / "networkmanager" / "90-outbox-flush"
    result = subprocess.run(
        ["shellcheck", "-s", "sh", str(hook)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_networkmanager_hook_flushes_in_the_background_as_the_user(tmp_path: Path) -> None:
    """Run as NetworkManager runs it (as root, `90-outbox-flush IFACE up`): it reads its
    root-only env file, returns without waiting for the flush, and the flush runs as
    OUTBOX_USER under the lock; a `down` does nothing."""
    from outbox import Outbox, State
    from outbox.sandbox import Sandbox

    hook = EXAMPLES / "networkmanager" / "90-outbox-flush"
    db = tmp_path / "j.db"
    with Outbox(db) as ob:
        entry = ob.enqueue("inspection-report", {"inspector": "Ada", "site": "N"}, key="k")
    with Sandbox(render_seconds=0.05) as sb:
        env_file = tmp_path / "env"
        env_file.write_text(
            f"CRAFTKIT_API_KEY={sb.api_key}\nCRAFTKIT_BASE_URL={sb.base_url}\n"
            f"OUTBOX_DB={db}\nOUTBOX_USER=root\nOUTBOX={_outbox_executable()}\n"
        )
        env_file.chmod(0o600)
        hook_env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",  # the dispatcher's minimal environment
            "OUTBOX_ENV_FILE": str(env_file),
            "OUTBOX_LOCK": str(tmp_path / "lock"),
            "OUTBOX_LOG": str(tmp_path / "log"),
        }
        down = subprocess.run(["sh", str(hook), "eth0", "down"], env=hook_env, timeout=60)
        assert down.returncode == 0 and not (tmp_path / "log").exists()
        up = subprocess.run(
            ["sh", str(hook), "eth0", "up"], env=hook_env, capture_output=True, timeout=60
        )
        assert up.returncode == 0 and up.stdout == b"" and up.stderr == b""

        def done() -> bool:
            with Outbox(db) as ob:
                return ob.get(entry.id).state is State.DONE

        wait_until(done, timeout=60, what="the background flush")
    assert sb.api_key not in (tmp_path / "log").read_text()


def test_windows_task_runs_hidden_whether_or_not_the_user_is_logged_on() -> None:
    """No PowerShell here to run it: the script's decisions are checked as text."""
    script = (EXAMPLES / "windows" / "outbox-flush-on-network.ps1").read_text()
    assert "-LogonType S4U" in script  # runs whether or not the user is logged on, no window
    assert "-Principal $principal" in script
    assert "(Get-Command outbox.exe -ErrorAction Stop).Source" in script  # an absolute path
    assert '-Execute $outbox -Argument "flush --timeout 120 --quiet"' in script
    assert "EventID=10000" in script and "-MultipleInstances IgnoreNew" in script


def _install_line(example: Path) -> str:
    """The install step of ``example`` that creates the journal (``... init``), as written."""
    lines = [
        line.removeprefix("#   ").split("   #")[0]
        for line in example.read_text().splitlines()
        if line.startswith("#   (set -a; ") and line.rstrip().split("   #")[0].endswith(" init)")
    ]
    assert len(lines) == 1, f"{example.name}: one `outbox init` install line, not {lines}"
    return lines[0]


def _env_file(path: Path, **values: str) -> dict[str, str]:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    path.chmod(0o600)
    return values


def test_installed_as_written_the_units_work_before_the_app_queued_anything(
    tmp_path: Path,
) -> None:
    """Right after the install steps (the app has not enqueued yet), the flush unit's command
    succeeds: the install's init line made the journal where the unit looks. Without that
    line, flush finds no journal and exits 78, which leaves the unit failed."""
    from outbox.sandbox import Sandbox

    db = tmp_path / "home" / "data" / "outbox.db"
    unit = (EXAMPLES / "systemd" / "outbox-flush@.service").read_text()
    (exec_start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    command = exec_start.removeprefix("ExecStart=").replace("@OUTBOX@", _outbox_executable())
    install = _install_line(EXAMPLES / "systemd" / "outbox-flush@.service")
    assert install == _install_line(EXAMPLES / "systemd" / "outbox-run@.service")
    with Sandbox(render_seconds=0.05) as sb:
        env_path = tmp_path / "fieldapp.env"
        values = _env_file(
            env_path,
            CRAFTKIT_API_KEY=sb.api_key,
            CRAFTKIT_BASE_URL=sb.base_url,
            OUTBOX_DB=str(db),
        )
        # systemd: EnvironmentFile= read by root, User= the journal's owner (root here).
        service_env = {"PATH": "/usr/bin:/bin", **values}
        before = subprocess.run(command.split(), env=service_env, capture_output=True, timeout=120)
        assert before.returncode == 78 and not db.exists()
        script = install.replace("/etc/outbox/fieldapp.env", str(env_path)).replace(
            "-u fieldapp", "-u root"
        )
        made = subprocess.run(
            ["sh", "-c", script],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "OUTBOX": _outbox_executable()},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0 and "created journal" in made.stdout, made.stderr
        assert db.exists()
        after = subprocess.run(
            command.split(), env=service_env, capture_output=True, text=True, timeout=120
        )
    assert after.returncode == 0, after.stdout + after.stderr


def test_networkmanager_hook_installed_as_written_flushes_before_the_first_enqueue(
    tmp_path: Path,
) -> None:
    """The hook's install steps, then a connection coming up before the app queued anything:
    the background flush finds the journal the init line made and exits 0 (not 78)."""
    from outbox.sandbox import Sandbox

    hook = EXAMPLES / "networkmanager" / "90-outbox-flush"
    db = tmp_path / "home" / "outbox.db"
    exits = tmp_path / "exits"
    # outbox as the hook's OUTBOX, noting each command's exit code (the flush runs detached).
    recorder = tmp_path / "outbox-recorded"
    recorder.write_text(
        f'#!/bin/sh\n"{_outbox_executable()}" "$@"\ncode=$?\necho "$1 $code" >> "{exits}"\n'
    )
    recorder.chmod(0o755)
    with Sandbox(render_seconds=0.05) as sb:
        env_path = tmp_path / "env"
        _env_file(
            env_path,
            CRAFTKIT_API_KEY=sb.api_key,
            CRAFTKIT_BASE_URL=sb.base_url,
            OUTBOX_DB=str(db),
            OUTBOX_USER="root",
            OUTBOX=str(recorder),
        )
        script = _install_line(hook).replace("/etc/outbox/env", str(env_path))
        root_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        made = subprocess.run(["sh", "-c", script], env=root_env, capture_output=True, timeout=120)
        assert made.returncode == 0, made.stderr
        hook_env = {
            **root_env,
            "OUTBOX_ENV_FILE": str(env_path),
            "OUTBOX_LOCK": str(tmp_path / "lock"),
            "OUTBOX_LOG": str(tmp_path / "log"),
        }
        up = subprocess.run(["sh", str(hook), "wlan0", "up"], env=hook_env, timeout=60)
        assert up.returncode == 0
        wait_until(
            lambda: exits.exists() and "flush" in exits.read_text(),
            timeout=60,
            what="the background flush",
        )
    assert exits.read_text().splitlines() == ["init 0", "flush 0"]
    assert (tmp_path / "log").read_text() == ""
