"""The built-in schedule under Docker: docker-compose.schedule.yaml (the cloud-backup service of
docker-compose.yaml, extended with the *_SCHEDULE settings; no ofelia service, no Docker socket), used as
its header says, with docker-compose 1.29 and the image the other container tests built. Second-level
(6-field) expressions: the jobs run at their times in TZ with the host's jitter, never overlap, `status`
shows the next run and the last result, a container stop (`docker stop`, as compose does) in the middle of
a scheduled backup stops it cleanly (no lock), and the next start catches the interrupted run up once. This
module runs after test_container.py, whose project (same container name) is down by then.
"""
import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import pytest

from test_container import (IMAGE_USER, ROOT, Compose, docker, env_from_example, free_port, lock_files, logs,
                            output_of, pack_files, pings_for, state, wait_until, write_random_file)
from test_container import recorder, workspace  # noqa: F401  (module-scoped fixtures shared with this file)

FILES = ("docker-compose.schedule.yaml", "docker-compose.override.yaml")
# Below the backup's 4-s period, so that each run's second tells its delay.
JITTER = 3


def jitter_offset(host, jitter):
    """The delay start-server gives a host (ScheduleSettings.jitterOffset), computed independently."""
    digest = hashlib.sha256(f"cloud-backup schedule jitter\n{host}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % jitter
NAME = "cloud-backup"


def scheduler_events(text):
    """("starting" | "ended", job) for each of the scheduler's own lines, in order."""
    events = []
    for line in text.splitlines():
        match = re.search(r"cloud-backup: schedule: starting (\S+) ", line)
        if match:
            events.append(("starting", match.group(1)))
            continue
        # A run that failed ends with a warning: "cloud-backup: warning: schedule: backup ended (exit code 1…".
        match = re.search(r"cloud-backup: (?:warning: )?schedule: (\S+) ended ", line)
        if match:
            events.append(("ended", match.group(1)))
    return events


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory, recorder):  # noqa: F811
    work = tmp_path_factory.mktemp("schedule")
    data = work / "data"
    data.mkdir()
    (data / "notes.txt").write_text("built-in schedule\n")
    os.chmod(data, 0o755)
    directory = work / "schedulevm"
    directory.mkdir()
    for name in ("docker-compose.yaml", "docker-compose.schedule.yaml"):
        shutil.copy(ROOT / name, directory / name)
    check = str(uuid.uuid4())
    values = {
        "RESTIC_PASSWORD": "schedule-test-password-8e1f",
        "RESTIC_REST_PORT": str(free_port()),
        "BACKUP_CHECK_URL": f"http://127.0.0.1:{recorder['port']}/{check}",
        "BACKUP_SCHEDULE": "*/4 * * * * *",
        "TOKEN_CHECK_SCHEDULE": "*/5 * * * * *",
        # Off: the compose file's defaults would run them at night.
        "FORGET_SCHEDULE": "", "CHECK_SCHEDULE": "", "DRILL_SCHEDULE": "",
        "TZ": "Europe/Rome",
        "SCHEDULE_JITTER_SECONDS": str(JITTER),
    }
    env_from_example(values, directory / ".env")
    override = {"services": {"cloud-backup": {
        "build": {"context": str(ROOT), "dockerfile": "docker/Dockerfile.prebuilt", "network": "host"},
        "network_mode": "host",
        "volumes": [f"{data}:/backup/dir1:ro"],
        # The server's rclone writes at most 10 MB/s (rclone's own setting, passed on by cloud-backup):
        # a backup of 100 MB of new data then lasts about 10 s, whatever this machine's speed, so the
        # stop below lands while restic writes.
        "environment": {"RCLONE_BWLIMIT": "10M"},
    }}}
    (directory / "docker-compose.override.yaml").write_text(json.dumps(override, indent=2) + "\n")
    compose = Compose(directory)
    try:
        yield {"compose": compose, "data": data, "check": check, "volume": f"{directory.name}_home"}
    finally:
        compose("down", "--volumes", "--timeout", "20", files=FILES, timeout=120)


def test_the_variant_has_no_ofelia_and_no_docker_socket(scheduled):
    compose = scheduled["compose"]
    result = compose("config", files=("docker-compose.schedule.yaml",))
    assert result.returncode == 0, output_of(result)
    text = result.stdout
    assert "ofelia" not in text and "docker.sock" not in text, text
    assert re.search(r"^  cloud-backup:$", text, re.M), text
    # The service is docker-compose.yaml's, with the schedule added; .env's values win, an empty one turns a job off.
    assert "container_name: cloud-backup" in text and "DAC_READ_SEARCH" in text and "stop_grace_period: 30s" in text, text
    assert re.search(r"BACKUP_SCHEDULE: '?\*/4 \* \* \* \* \*'?$", text, re.M), text
    assert re.search(r"FORGET_SCHEDULE: ''$", text, re.M), text


def test_scheduled_jobs_run_on_time_status_shows_them_and_a_stop_leaves_no_lock(scheduled, recorder):  # noqa: F811
    compose, volume = scheduled["compose"], scheduled["volume"]
    result = compose("up", "-d", files=FILES)
    assert result.returncode == 0, output_of(result)
    assert docker("ps", "--all", "--filter", "name=ofelia", "--format", "{{.Names}}").stdout.strip() == "", "no ofelia"
    wait_until(lambda: len(re.findall(r"schedule: backup ended \(exit code 0", logs(NAME))) >= 2
               and "schedule: check-refresh-token ended (exit code 0" in logs(NAME), 60, 0.5, "two scheduled backups")
    text = logs(NAME)
    assert "schedule: backup (`cloud-backup backup /backup`) at BACKUP_SCHEDULE=*/4 * * * * * (Europe/Rome)" in text, text
    # At their times (every 4 s, in the container's TZ), never two at once.
    dues = re.findall(r"schedule: starting backup \(due \d{4}-\d\d-\d\d \d\d:\d\d:(\d\d) \+01:00|"
                      r"schedule: starting backup \(due \d{4}-\d\d-\d\d \d\d:\d\d:(\d\d) \+02:00", text)
    seconds = [int(a or b) for a, b in dues]
    # The compose file's hostname names the host (no RESTIC_HOST): its delay, the same at every run.
    hostname = compose("config", files=FILES).stdout
    host = re.search(r"^    hostname: (\S+)$", hostname, re.M).group(1)
    offset = jitter_offset(host, JITTER)
    assert seconds and all(s % 4 == offset for s in seconds), f"delay {offset} s for {host}: {seconds}\n{text}"
    preview = json.loads(docker("exec", "--user", IMAGE_USER, NAME, "cloud-backup", "schedule", "--json", "--next", "5").stdout)
    assert preview["offsetSeconds"] == offset and preview["timeZone"] == "Europe/Rome", preview
    backup = next(job for job in preview["jobs"] if job["job"] == "backup")
    assert len(backup["next"]) == 5 and all(int(t) % 4 == offset for t in backup["next"]), preview
    running = set()
    for event, job in scheduler_events(text):
        if event == "starting":
            assert job not in running, f"{job} started twice:\n{text}"
            running.add(job)
        else:
            running.discard(job)
    kinds = [p["path"].rsplit("/", 1)[-1] for p in pings_for(recorder, scheduled["check"])]
    assert kinds[:2] == ["start", "0"], kinds
    status = docker("exec", "--user", IMAGE_USER, NAME, "cloud-backup", "status", check=False)
    assert re.search(r"backup at BACKUP_SCHEDULE=\*/4 \* \* \* \* \*: next run \S+ \S+ \+0[12]:00; "
                     r"(last run \S+ \S+ \+0[12]:00 succeeded|running since)", status.stdout), output_of(status)

    # A slow backup (new random data, written through the bandwidth limit), stopped while restic writes.
    # Written beside, then renamed in: no backup sees half a file (and finishes it quickly).
    staging = scheduled["data"].parent / "big.bin"
    write_random_file(staging, 100_000_000)
    stored = sum(pack_files(volume).values())
    os.rename(staging, scheduled["data"] / "big.bin")
    # Whichever run reads it (one that had started before the rename may), it is writing once 10 MB of
    # new packs are there: about 1 s into its 10 s.
    wait_until(lambda: sum(pack_files(volume).values()) > stored + 10_000_000, 60, 0.05, "a backup writing the new data")
    assert lock_files(volume), "a backup writing has its lock"
    # What `docker compose stop` does, without its seconds of start-up.
    docker("stop", NAME, timeout=120)
    text = logs(NAME)
    assert state(NAME)["ExitCode"] == 0, text
    assert "stopping the schedule and its running jobs, then the REST server" in text, text
    assert "schedule: stopping backup" in text, text
    assert "backup interrupted: stopped on request" in text, text
    assert lock_files(volume) == [], f"a lock was left:\n{text}"

    # The next start: the interrupted run is caught up (its time passed without a success).
    before = text.count("schedule: backup ended (exit code 0")
    result = compose("up", "-d", files=FILES)
    assert result.returncode == 0, output_of(result)
    wait_until(lambda: logs(NAME).count("schedule: backup ended (exit code 0") > before, 90, 0.5, "a backup after the restart")
    text = logs(NAME)
    assert "schedule: backup missed a scheduled run" in text, text
    assert text.count("schedule: starting backup (catch-up of the first missed run") == 1, text
    (big := scheduled["data"] / "big.bin").unlink()
    assert not big.exists()
