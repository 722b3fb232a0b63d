"""Container tests: the image (restic 0.18 inside) and the distribution files, used as a user would.

Run by scripts/test-container, which builds the image first (podman, `--target prebuilt`, from a binary
built on the host). Alone: CLOUD_BACKUP_TEST_IMAGE=localhost/cloud-backup:test python3 -m pytest -v Tests/Container

Everything runs on loopback: containers use `--network host` (the ping recorder listens on the host's
127.0.0.1) or `--network none`. Secrets go through --env-file, never argv. Containers and volumes are
named cloud-backup-test-* and removed by the fixtures (and by the runner, whatever happens).
"""
import configparser
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("CLOUD_BACKUP_TEST_IMAGE", "localhost/cloud-backup:test")
PREFIX = "cloud-backup-test-"
TOKEN = f"{os.getpid()}"
# crun/ulimit adjustments these sandboxed machines need (see containers.conf); the runner sets the same.
os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "Tests/Container/containers.conf"))

IMAGE_USER = "user"
HOME = "/home/user"
REPOSITORY = f"{HOME}/.local/state/cloud-backup/repository"
VM_HOSTNAME = "cloud-backup-test-vm"
ENTRYPOINT = ["/usr/bin/tini", "--", "/usr/local/bin/cloud-backup-entrypoint"]
# INFN login subcommands: with the local-directory default they have nothing to check.
LOGIN_SUBCOMMANDS = {"check-refresh-token"}


# --- helpers ---------------------------------------------------------------------------------

def podman(*args, check=True, timeout=180, **kwargs):
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {shlex.join(args)} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{quiet(result.stderr)}")
    return result


def quiet(stderr):
    """podman's stderr without its complaints about systemd (no systemd here to run health timers)."""
    return "\n".join(line for line in stderr.splitlines() if "systemd" not in line)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def volume_path(volume):
    return Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip())


def remove_container(name):
    podman("rm", "--force", "--volumes", "--time", "2", name, check=False)


def wait_until(predicate, timeout, interval=0.2, message="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def healthcheck(name):
    result = podman("healthcheck", "run", name, check=False, timeout=60)
    return result.returncode, result.stdout + quiet(result.stderr)


def last_health_output(name):
    state = json.loads(podman("inspect", "--format", "{{json .State}}", name).stdout)
    health = state.get("Health") or state.get("Healthcheck") or {}
    log = health.get("Log") or []
    return log[-1]["Output"] if log else ""


def lock_files(volume):
    """The lock files in the default repository on the home volume (mounted at HOME)."""
    repository = volume_path(volume) / Path(REPOSITORY).relative_to(HOME)
    assert (repository / "config").is_file(), f"no repository at {repository}"
    locks = repository / "locks"
    return sorted(p.name for p in locks.iterdir()) if locks.is_dir() else []


def start_server(name, volume, env_file, data_dir, extra=()):
    remove_container(name)
    podman("run", "--detach", "--name", name, "--hostname", VM_HOSTNAME, "--network", "host",
           "--env-file", str(env_file), "--volume", f"{volume}:{HOME}",
           "--volume", f"{data_dir}:/backup/dir1:ro", *extra, IMAGE)
    wait_until(lambda: healthcheck(name)[0] == 0, 60, 0.5, f"{name} to be healthy")


def serverless(volume, env_file, *args, check=True):
    """A throw-away container without a server (`run --rm`, no network): the repository directly."""
    return podman("run", "--rm", "--network", "none", "--env-file", str(env_file),
                  "--volume", f"{volume}:{HOME}", IMAGE, *args, check=check)


def pings_for(recorder, check_uuid):
    if not recorder["record"].exists():
        return []
    entries = [json.loads(line) for line in recorder["record"].read_text().splitlines() if line.strip()]
    return [e for e in entries if e["path"].startswith(f"/{check_uuid}")]


def ping_kind(ping):
    """"start", an exit status like "0", "fail", "log", or "" for a plain success ping."""
    parts = ping["path"].strip("/").split("/")
    return parts[1] if len(parts) > 1 else ""


def logs(name):
    result = podman("logs", name)
    return result.stdout + result.stderr


def write_random_file(path, size):
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    os.chmod(path, 0o644)


def compose_config():
    """docker-compose.yaml as `docker-compose config` resolves it, with .env made from .env.example."""
    return _compose_cache.setdefault("config", _load_compose())


_compose_cache = {}


def _load_compose():
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"{PREFIX}compose-{TOKEN}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        for name in ("docker-compose.yaml", "ofelia-config.ini", "Dockerfile"):
            shutil.copy(ROOT / name, work / name)
        shutil.copy(ROOT / ".env.example", work / ".env")
        result = subprocess.run(["docker-compose", "-f", "docker-compose.yaml", "config"], cwd=work,
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
        # Debian's docker-compose runs on the system Python, which has PyYAML: parse with that one.
        compose = shutil.which("docker-compose")
        interpreter = Path(compose).read_text(errors="replace").splitlines()[0].lstrip("#!").split()
        parsed = subprocess.run(
            interpreter + ["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
            input=result.stdout, capture_output=True, text=True, timeout=60, check=True)
        return json.loads(parsed.stdout)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ofelia_config():
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.read(ROOT / "ofelia-config.ini")
    return parser


def ofelia_jobs(kind):
    parser = ofelia_config()
    jobs = {}
    for section in parser.sections():
        match = re.fullmatch(r'(job-[a-z-]+)\s+"([^"]+)"', section)
        if match and match.group(1) == kind:
            jobs[match.group(2)] = dict(parser[section])
    return jobs


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    work = tmp_path_factory.mktemp("container")
    data = work / "data"
    data.mkdir()
    (data / "notes.txt").write_text("cloud-backup container test\n")
    write_random_file(data / "random.bin", 2_000_000)
    for path in (work, data):
        os.chmod(path, 0o755)  # the image's user (uid 1000) reads the bind mount
    return work


@pytest.fixture(scope="module")
def recorder(workspace):
    record = workspace / "pings.jsonl"
    ready = workspace / "ping-port"
    process = subprocess.Popen([sys.executable, str(ROOT / "Tests/Fixtures/ping_recorder.py"), str(record),
                                "--ready-file", str(ready)], stdin=subprocess.DEVNULL)
    try:
        port = int(wait_until(lambda: ready.exists() and ready.read_text().strip(), 15, 0.05, "the ping recorder"))
        yield {"port": port, "record": record}
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def checks(recorder):
    return {"backup": str(uuid.uuid4()), "forget": str(uuid.uuid4()), "check": str(uuid.uuid4())}


@pytest.fixture(scope="module")
def env_file(workspace, recorder, checks):
    """The user's .env: .env.example with the blanks filled in (so the template itself is exercised)."""
    values = {
        "RESTIC_PASSWORD": secrets.token_urlsafe(18),
        "RESTIC_REST_PORT": str(free_port()),
        "BACKUP_CHECK_URL": f"http://127.0.0.1:{recorder['port']}/{checks['backup']}",
        "FORGET_CHECK_URL": f"http://127.0.0.1:{recorder['port']}/{checks['forget']}",
        "CHECK_CHECK_URL": f"http://127.0.0.1:{recorder['port']}/{checks['check']}",
        "LOCK_WAIT_SECONDS": "30",
    }
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name = re.match(r"#?([A-Z][A-Z0-9_]*)=", line)
        if name and name.group(1) in values:
            line = f"{name.group(1)}={values.pop(name.group(1))}"
        lines.append(line)
    assert not values, f".env.example lacks {sorted(values)}"
    path = workspace / "env"
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return path


@pytest.fixture(scope="module")
def home_volume():
    name = f"{PREFIX}home-{TOKEN}"
    podman("volume", "rm", "--force", name, check=False)
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "--force", name, check=False)


@pytest.fixture(scope="module")
def server(home_volume, env_file, workspace):
    name = f"{PREFIX}server-{TOKEN}"
    start_server(name, home_volume, env_file, workspace / "data")
    yield name
    remove_container(name)


# --- the image -------------------------------------------------------------------------------

def test_image_configuration():
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", IMAGE).stdout)
    # Docker keeps the health check in Config.Healthcheck; podman shows it beside Config.
    healthcheck = config.get("Healthcheck") or json.loads(
        podman("image", "inspect", "--format", "{{json .HealthCheck}}", IMAGE).stdout or "null")
    assert config["Entrypoint"] == ENTRYPOINT
    assert config["Cmd"] == ["start-server"]
    assert config["User"] == IMAGE_USER
    assert config["WorkingDir"] == "/backup"
    assert HOME in (config.get("Volumes") or {})
    assert healthcheck and healthcheck["Test"] == ["CMD", "cloud-backup", "server-status"], \
        "no HEALTHCHECK: podman keeps it only with `build --format docker`"


def test_image_contents():
    script = r"""
set -e
echo "user=$(id -un) uid=$(id -u) home=$HOME pwd=$(pwd)"
restic version
rclone version | head -n 1
oidc-gen --version
tini --version
test -x /usr/local/bin/cloud-backup
ldd /usr/local/bin/cloud-backup
ls /usr/lib/*/libcurl.so.4
echo "apt-lists=$(ls -A /var/lib/apt/lists | wc -l) apt-cache=$(find /var/cache/apt -type f | wc -l)"
for dir in .config/rclone .config/oidc-agent .cache .local/state; do test -O "$HOME/$dir" && echo "owned $dir"; done
"""
    out = podman("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", IMAGE, "-c", script).stdout
    assert "user=user uid=1000 home=/home/user pwd=/backup" in out
    assert re.search(r"^restic 0\.18\.", out, re.M), out
    assert re.search(r"^rclone v1\.", out, re.M), out
    assert re.search(r"^oidc-gen \d", out, re.M), out
    assert "tini version" in out
    assert "not found" not in out, f"the binary misses a shared library:\n{out}"
    assert "/libcurl.so.4" in out, "libcurl is there for Healthchecks pings (loaded with dlopen)"
    assert "apt-lists=0 apt-cache=0" in out
    for dir in (".config/rclone", ".config/oidc-agent", ".cache", ".local/state"):
        assert f"owned {dir}" in out


def test_entrypoint_passes_subcommands_through():
    result = podman("run", "--rm", "--network", "none", IMAGE, "--version")
    assert result.stdout.strip().startswith("cloud-backup ")
    result = podman("run", "--rm", "--network", "none", IMAGE, "no-such-subcommand", check=False)
    assert result.returncode == 64


# --- the server and jobs, as compose + ofelia run them ---------------------------------------

def test_server_is_healthy(server, env_file):
    status, output = healthcheck(server)
    assert status == 0, output
    assert "unhealthy" not in output
    assert "REST server ready on 127.0.0.1" in last_health_output(server)
    server_log = logs(server)
    assert "127.0.0.1" in server_log and "only" in server_log, "without credentials the server must stay on loopback"


def test_backup_via_exec_as_user(server, recorder, checks, home_volume):
    """What ofelia's job-exec does: `docker exec --user user CONTAINER cloud-backup backup …`."""
    result = podman("exec", "--user", IMAGE_USER, server, "cloud-backup", "backup", "--tag", "first", "/backup/dir1",
                    check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "REST server" in output, f"the job should go through the container's REST server:\n{output}"
    assert "snapshot" in output
    pings = pings_for(recorder, checks["backup"])
    assert [ping_kind(p) for p in pings] == ["start", "0"], pings
    assert pings[0]["query"]["rid"] == pings[1]["query"]["rid"]
    assert "snapshot" in pings[1]["body"]
    assert lock_files(home_volume) == []


def test_ofelia_jobs_run_as_written(server, recorder, checks, home_volume):
    """Each job-exec command of ofelia-config.ini, run exactly as ofelia would run it."""
    jobs = ofelia_jobs("job-exec")
    assert set(jobs) == {"check-refresh-token", "backup", "forget", "check"}
    for name in ("backup", "forget", "check", "check-refresh-token"):
        job = jobs[name]
        argv = shlex.split(job["command"])
        result = podman("exec", "--user", job.get("user", "root"), server, *argv, check=False, timeout=300)
        output = result.stdout + result.stderr
        if name in LOGIN_SUBCOMMANDS:
            assert result.returncode == 0 and "nothing to check" in output, output
        else:
            assert result.returncode == 0, f"{job['command']}:\n{output}"
    assert [ping_kind(p) for p in pings_for(recorder, checks["forget"])] == ["start", "0"]
    assert [ping_kind(p) for p in pings_for(recorder, checks["check"])] == ["start", "0"]
    assert lock_files(home_volume) == []


def test_snapshots_from_a_serverless_container(server, home_volume, env_file):
    result = serverless(home_volume, env_file, "restic", "snapshots", "--json")
    snapshots = json.loads(result.stdout)
    assert len(snapshots) >= 2, snapshots
    assert {s["hostname"] for s in snapshots} == {VM_HOSTNAME}, "hostname: (compose) should name the VM"
    assert ["/backup/dir1"] in [s["paths"] for s in snapshots]
    assert ["/backup"] in [s["paths"] for s in snapshots], "the ofelia backup job saves /backup"
    assert "destination directly" in result.stderr


def test_unhealthy_when_no_server_answers(env_file):
    """A server that cannot serve its destination (rclone keeps failing): the health check says so."""
    name = f"{PREFIX}unhealthy-{TOKEN}"
    remove_container(name)
    try:
        podman("run", "--detach", "--name", name, "--network", "host", "--env-file", str(env_file),
               "--env", f"RESTIC_REST_PORT={free_port()}",
               "--env", "BACKUP_REMOTE=:ftp,host=127.0.0.1,port=9,user=x,pass=wRUJSEVLuoSR2EcZUFYcLhS06R1IBUE5:bucket", IMAGE)
        wait_until(lambda: "restarting" in logs(name), 30, 0.2, "rclone to fail")
        status, output = healthcheck(name)
        assert status != 0 and "unhealthy" in output, output
        # The health check gives the server's own reason, from its record in the state directory.
        output = last_health_output(name)
        assert "the REST server is not ready" in output and "connection refused" in output, output
    finally:
        remove_container(name)


def test_authenticated_server_in_a_private_network(env_file, workspace):
    """With RESTIC_REST_USERNAME/PASSWORD the server listens on all interfaces: here a private network
    namespace (--network none) where "all" is only the container's own loopback."""
    name = f"{PREFIX}auth-{TOKEN}"
    volume = f"{PREFIX}auth-home-{TOKEN}"
    credentials = workspace / "auth-env"
    credentials.write_text(f"RESTIC_REST_USERNAME=backup-client\nRESTIC_REST_PASSWORD={secrets.token_urlsafe(18)}\n"
                           "BACKUP_CHECK_URL=\nFORGET_CHECK_URL=\n")
    os.chmod(credentials, 0o600)
    remove_container(name)
    try:
        podman("run", "--detach", "--name", name, "--network", "none", "--env-file", str(env_file),
               "--env-file", str(credentials), "--volume", f"{volume}:{HOME}",
               "--volume", f"{workspace / 'data'}:/backup/dir1:ro", IMAGE)
        wait_until(lambda: healthcheck(name)[0] == 0, 60, 0.5, f"{name} to be healthy")
        assert "authentication required" in logs(name)
        result = podman("exec", "--user", IMAGE_USER, name, "cloud-backup", "backup", "/backup/dir1", check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "REST server" in result.stdout + result.stderr
        wrong = podman("exec", "--user", IMAGE_USER, "--env", "RESTIC_REST_PASSWORD=not-the-password", name,
                       "cloud-backup", "server-status", check=False)
        assert wrong.returncode == 1 and "refuses" in wrong.stdout, wrong.stdout + wrong.stderr
    finally:
        remove_container(name)
        podman("volume", "rm", "--force", volume, check=False)


def test_stop_idle_server(server, home_volume):
    started = time.monotonic()
    podman("stop", "--time", "10", server)
    elapsed = time.monotonic() - started
    state = json.loads(podman("inspect", "--format", "{{json .State}}", server).stdout)
    assert elapsed < 10, f"podman stop took {elapsed:.1f} s"
    assert state["ExitCode"] == 0, state
    assert "REST server stopped" in logs(server)
    assert lock_files(home_volume) == []


def test_stop_during_a_backup_leaves_no_lock(home_volume, env_file, workspace, recorder, checks):
    """The strongest case: SIGTERM to the container while a job started by `exec` is writing."""
    name = f"{PREFIX}stop-{TOKEN}"
    data = workspace / "data"
    write_random_file(data / "slow.bin", 6_000_000)  # new data: at 400 KiB/s this takes ~15 s
    # Its own port, so it cannot meet another test's server.
    start_server(name, home_volume, env_file, data, extra=("--env", f"RESTIC_REST_PORT={free_port()}"))
    job = None
    try:
        before = len(pings_for(recorder, checks["backup"]))
        job = subprocess.Popen(["podman", "exec", "--user", IMAGE_USER, name, "cloud-backup", "backup",
                                "--limit-upload", "400", "/backup/dir1"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_until(lambda: lock_files(home_volume) or job.poll() is not None, 30, 0.1, "restic's lock")
        if job.poll() is not None:
            pytest.fail(f"the backup ended (exit {job.returncode}) before it could be stopped:\n{job.stdout.read()}")
        time.sleep(1.5)  # restic is uploading now
        assert job.poll() is None, "the backup ended before the stop: make it slower"
        started = time.monotonic()
        podman("stop", "--time", "10", name)
        elapsed = time.monotonic() - started
        output, _ = job.communicate(timeout=30)
        state = json.loads(podman("inspect", "--format", "{{json .State}}", name).stdout)
        server_log = logs(name)
    finally:
        if job and job.poll() is None:
            job.kill()
        remove_container(name)

    assert elapsed < 10, f"podman stop took {elapsed:.1f} s\n{server_log}"
    assert state["ExitCode"] == 0, f"{state}\n{server_log}"
    assert "stopping the running jobs" in server_log, server_log
    # restic 0.18 may end an interrupted backup with exit 1 ("context canceled"); the job still reports 130.
    assert job.returncode == 130, f"the job should stop on request (130), not finish or be killed:\n{output}"
    assert "received SIGTERM" in output, output
    assert lock_files(home_volume) == [], f"restic left its lock behind:\n{output}"
    final = pings_for(recorder, checks["backup"])[before:]
    assert [ping_kind(p) for p in final][:1] == ["start"], final
    assert ping_kind(final[-1]) == "130", f"no interruption ping: {final}"
    # The repository is still sound, and nothing holds it.
    assert serverless(home_volume, env_file, "restic", "list", "locks", "--no-lock").stdout.strip() == ""
    check = serverless(home_volume, env_file, "restic", "check", check=False)
    assert check.returncode == 0, check.stdout + check.stderr


# --- the distribution files ------------------------------------------------------------------

def test_compose_file_validates_and_matches_the_image():
    config = compose_config()
    services = config["services"]
    assert set(services) == {"cloud-backup", "ofelia"}
    backup = services["cloud-backup"]
    assert backup["command"] in ("start-server", ["start-server"])
    assert backup.get("hostname"), "a stable hostname names the VM in snapshots"
    assert backup.get("container_name")
    assert any(v.split(":")[1] == HOME for v in backup["volumes"] if v.count(":") >= 1), backup["volumes"]
    assert any(v.split(":")[1].startswith("/backup/") for v in backup["volumes"]), backup["volumes"]
    ofelia = services["ofelia"]
    assert ofelia["image"].startswith("mcuadros/ofelia")
    assert "cloud-backup" in ofelia["depends_on"]
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in ofelia["volumes"]
    assert any(v.endswith(":/etc/ofelia/config.ini:ro") and "ofelia-config.ini" in v for v in ofelia["volumes"])
    assert "--config=/etc/ofelia/config.ini" in ofelia["command"]


def valid_cron_field(field, low, high, names=()):
    def value(text):
        if text.upper() in names:
            return names.index(text.upper()) + low
        return int(text) if text.isdigit() else None

    for part in field.split(","):
        base, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            return False
        if base in ("*", "?"):
            continue
        first, _, last = base.partition("-")
        bounds = [value(first)] + ([value(last)] if last else [])
        if any(b is None or not low <= b <= high for b in bounds):
            return False
    return True


def valid_ofelia_schedule(schedule):
    """robfig/cron as ofelia uses it: 6 fields starting with seconds, a descriptor, or @every DURATION."""
    if schedule.startswith("@every "):
        return re.fullmatch(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", schedule[7:].strip()) is not None
    if schedule.startswith("@"):
        return schedule in ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
    fields = schedule.split()
    if len(fields) != 6:
        return False
    months = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    days = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
    ranges = [(0, 59, ()), (0, 59, ()), (0, 23, ()), (1, 31, ()), (1, 12, months), (0, 6, days)]
    return all(valid_cron_field(f, lo, hi, names) for f, (lo, hi, names) in zip(fields, ranges))


def test_schedule_validator_itself():
    assert valid_ofelia_schedule("0 0 2 * * *") and valid_ofelia_schedule("@every 1h30m")
    assert valid_ofelia_schedule("0 */15 1-5 * JAN-MAR MON,FRI")
    for bad in ("0 2 * * *", "0 0 24 * * *", "@every", "@every 5", "0 0 2 * * * *", "60 0 0 * * *"):
        assert not valid_ofelia_schedule(bad), bad


def test_ofelia_config():
    parser = ofelia_config()
    container = compose_config()["services"]["cloud-backup"]["container_name"]
    execs = ofelia_jobs("job-exec")
    locals_ = ofelia_jobs("job-local")
    assert set(execs) == {"check-refresh-token", "backup", "forget", "check"}
    assert set(locals_) == {"clean-logs"}
    expected_hour = {"check-refresh-token": "1", "backup": "2", "forget": "3", "clean-logs": "4", "check": "5"}
    for name, job in {**execs, **locals_}.items():
        assert valid_ofelia_schedule(job["schedule"]), f"{name}: {job['schedule']!r}"
        assert job["schedule"].split()[2] == expected_hour[name], f"{name}: {job['schedule']!r}"
        assert not re.search(r"[;#]", job["command"]), "ofelia would cut the command at ; or #"
    assert execs["check"]["schedule"].split()[5] == "0", "the integrity check runs weekly (Sundays)"
    # ofelia (gcfg) refuses keys it does not know: keep to the documented ones.
    known = {"job-exec": {"schedule", "command", "container", "user", "tty", "environment", "no-overlap"},
             "job-local": {"schedule", "command", "dir", "environment", "no-overlap"}}
    for kind, jobs in (("job-exec", execs), ("job-local", locals_)):
        for name, job in jobs.items():
            assert not set(job) - known[kind], f"{name}: unknown keys {sorted(set(job) - known[kind])}"
    assert set(parser["global"]) <= {"save-folder", "save-only-on-error"} | {
        k for k in parser["global"] if k.startswith(("smtp-", "email-", "slack-", "mail-only-on-error"))}
    for name, job in execs.items():
        assert job["container"] == container, f"{name} targets {job['container']!r}, compose names {container!r}"
        assert job.get("user") == IMAGE_USER, f"{name} must run as {IMAGE_USER} (ofelia's default is root)"
        argv = shlex.split(job["command"])
        assert argv[0] == "cloud-backup", f"{name}: job-exec runs without the entrypoint: start with cloud-backup"
    assert shlex.split(execs["forget"]["command"])[1:] == ["forget", "--keep-within", "1m", "--prune"]
    save_folder = parser["global"]["save-folder"]
    assert save_folder in locals_["clean-logs"]["command"]
    ofelia_volumes = compose_config()["services"]["ofelia"]["volumes"]
    assert any(v.split(":")[1] == save_folder for v in ofelia_volumes), "the logs directory must be mounted"


def test_ofelia_subcommands_are_known_to_the_binary():
    for job in ofelia_jobs("job-exec").values():
        subcommand = shlex.split(job["command"])[1]
        result = podman("run", "--rm", "--network", "none", IMAGE, subcommand, "--help", check=False)
        assert result.returncode == 0, f"{subcommand}: {result.stderr}"
        assert subcommand in (result.stdout + result.stderr)


def documented_variables():
    """Every variable the help documents (HelpText.swift). NAME_FILE is a pattern; RESTIC_REPOSITORY and
    OIDC_SOCK are what the tool sets for its children, not settings."""
    text = (ROOT / "Sources/CloudBackupCore/CLI/HelpText.swift").read_text()
    names = set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", text))
    return names - {"NAME_FILE", "RESTIC_REPOSITORY", "OIDC_SOCK"}


def test_env_example_lists_every_variable():
    lines = (ROOT / ".env.example").read_text().splitlines()
    listed = {}
    for index, line in enumerate(lines):
        match = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            listed[match.group(1)] = index
            comment = lines[index - 1] if index else ""
            assert comment.startswith("# ") and "default" in comment.lower(), \
                f"{match.group(1)}: needs a one-line comment with its default above it"
            assert not re.search(r"\s#", match.group(2)), f"{match.group(1)}: env files keep inline comments in the value"
    documented = documented_variables()
    assert documented, "no variables found in HelpText.swift"
    assert not documented - set(listed), f"missing from .env.example: {sorted(documented - set(listed))}"
    assert not set(listed) - documented, f"not documented in the help: {sorted(set(listed) - documented)}"
    for group in ("Mandatory", "INFN", "Destination", "REST server", "Monitoring", "Tuning"):
        assert any(line.startswith("# ---") and group in line for line in lines), f"no {group} group"
