"""`wtb run --runner ray` as a user runs it: a private local Ray instance, or a cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from services.ray_head import RayHead, ray_environment

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TOY = Path(__file__).parent / "fixtures" / "toy"
WTB = [sys.executable, "-m", "wtb"]


def _wtb(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WTB, *args],
        cwd=cwd,
        env=env or ray_environment(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _labels_and_values(out: str) -> dict[str, Any]:
    (doc,) = json.loads(out)  # always a list of documents
    return {
        row["label"]: (row["verdict"], row["metrics"]["correct"]["value"], row["runs"])
        for row in doc["matrix"]["rows"]
    }


def test_local_ray_is_started_quietly_and_stopped_after(tmp_path: Path) -> None:
    # A short temporary directory of its own: Ray's socket paths must stay short, and
    # whatever the run leaves behind shows up here.
    with tempfile.TemporaryDirectory(prefix="wtb") as scratch:
        env = ray_environment({"TMPDIR": scratch})
        done = _wtb("run", "--runner", "ray", "-f", str(TOY), "-o", "json", cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        assert list(Path(scratch).iterdir()) == [], "Ray's temporary directory was removed"
    inline = _wtb(
        "run", "-f", str(TOY), "-o", "json", "--database", "sqlite:///inline.db", cwd=tmp_path
    )
    assert inline.returncode == 0, inline.stderr
    assert _labels_and_values(done.stdout) == _labels_and_values(inline.stdout)
    # Quiet: Ray's start-up and worker logs stay out of the user's terminal.
    assert "Ray" not in done.stderr, done.stderr


def test_run_on_an_existing_cluster(ray_head: RayHead, tmp_path: Path) -> None:
    done = _wtb(
        "run",
        "--runner",
        "ray",
        "--ray-address",
        ray_head.address,
        "--actors",
        "3",
        "-f",
        str(TOY),
        "-o",
        "json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    rows = _labels_and_values(done.stdout)
    assert rows["answer=reversed"] == ("worse", 0.0, 40)
    # The head outlives the run: connecting did not stop it.
    assert ray_head.process.poll() is None


def test_ray_address_from_the_environment(ray_head: RayHead, tmp_path: Path) -> None:
    env = ray_environment({"RAY_ADDRESS": ray_head.address})
    done = _wtb("run", "--runner", "ray", "-q", "-f", str(TOY), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "answer=reversed" in done.stdout


def test_unreachable_cluster_is_refused_at_once(tmp_path: Path) -> None:
    done = _wtb(
        "run", "--runner", "ray", "--ray-address", "127.0.0.1:1", "-f", str(TOY), cwd=tmp_path
    )
    assert done.returncode == 2
    assert "no Ray cluster answers at 127.0.0.1:1" in done.stderr
    assert "fix:" in done.stderr


def test_ray_options_without_the_ray_runner_are_refused(tmp_path: Path) -> None:
    done = _wtb("run", "--actors", "2", "-f", str(TOY), cwd=tmp_path)
    assert done.returncode == 2
    assert "add --runner ray" in done.stderr


def test_driver_needs_a_database_from_the_environment(tmp_path: Path) -> None:
    env = {k: v for k, v in ray_environment().items() if k != "WTB_DATABASE_URL"}
    done = _wtb("driver", "--run", "default/x:1", cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert "WTB_DATABASE_URL is not set" in done.stderr
    # No option takes credentials on the command line.
    help_text = _wtb("driver", "--help", cwd=tmp_path).stdout
    assert "--database" not in help_text


def test_driver_of_an_unknown_run_names_it(tmp_path: Path) -> None:
    env = ray_environment({"WTB_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"})
    done = _wtb("driver", "--run", "default/nothing:1", cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert "no run 'default/nothing:1'" in done.stderr
