"""Container tests under a real Docker engine: the image (restic 0.18 inside) and the distribution files,
used the way the README tells users to.

Run by scripts/test-container, which starts a private dockerd, builds the image with the legacy builder
(docker/Dockerfile.prebuilt, from a binary built on the host: no registry here) and sets DOCKER_HOST,
CLOUD_BACKUP_TEST_DOCKER (the client) and CLOUD_BACKUP_TEST_ENGINE (the engine's directory).

The compose tests work in a directory laid out as the README says (docker-compose.yaml, ofelia-config.ini,
.env made from .env.example, logs/) and type the README's commands with docker-compose 1.29: build,
`run --rm cloud-backup config`, `up -d`, each ofelia job as ofelia runs it (`docker exec --user user
cloud-backup COMMAND`), `docker stop`/`docker kill` in the middle of a backup and the next jobs, a restore.
A docker-compose.override.yaml holds what differs on this machine: the build from the host binary, the
directories mounted, the host's network (the ping recorder listens on the host's loopback; the engine has
no bridge), and a stand-in for ofelia, whose image cannot be fetched. Secrets go through env files, never
argv. Containers and volumes are removed by the fixtures, and the whole engine by the runner.
"""
import configparser
import filecmp
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
DOCKER = os.environ.get("CLOUD_BACKUP_TEST_DOCKER", "/usr/bin/docker")
IMAGE = os.environ.get("CLOUD_BACKUP_TEST_IMAGE", "cloud-backup:latest")
ENGINE = Path(os.environ.get("CLOUD_BACKUP_TEST_ENGINE", "/nonexistent"))
PREFIX = "cloud-backup-test-"
TOKEN = f"{os.getpid()}"

IMAGE_USER = "user"
IMAGE_UID = 1000
HOME = "/home/user"
REPOSITORY = f"{HOME}/.local/state/cloud-backup/repository"
VM_HOSTNAME = "cloud-backup-test-vm"
ENTRYPOINT = ["/usr/bin/tini", "--", "/usr/local/bin/cloud-backup-entrypoint"]
READ_ALL_RESTIC = "/usr/local/libexec/cloud-backup/restic"
# INFN login subcommands: with the local-directory default they have nothing to check.
LOGIN_SUBCOMMANDS = {"check-refresh-token"}
# Another user of the machine, owning a service's private data.
OTHER_UID = 2000


# --- helpers ---------------------------------------------------------------------------------

def docker(*args, check=True, timeout=180, **kwargs):
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {shlex.join(args)} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def output_of(result):
    return result.stdout + result.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def volume_path(volume):
    return Path(docker("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip())


def remove_container(name):
    docker("rm", "--force", "--volumes", name, check=False)


def wait_until(predicate, timeout, interval=0.2, message="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def state(name):
    return json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)


def health(name):
    return state(name).get("Health") or {}


def last_health_output(name):
    log = health(name).get("Log") or []
    return log[-1]["Output"] if log else ""


def server_ready(name):
    """What the health check runs, run now: the server answers and is this state directory's."""
    return docker("exec", "--user", IMAGE_USER, name, "cloud-backup", "server-status", check=False).returncode == 0


def lock_files(volume):
    """The lock files in the default repository on the home volume (mounted at HOME)."""
    repository = volume_path(volume) / Path(REPOSITORY).relative_to(HOME)
    assert (repository / "config").is_file(), f"no repository at {repository}"
    locks = repository / "locks"
    return sorted(p.name for p in locks.iterdir()) if locks.is_dir() else []


def pack_files(volume):
    data = volume_path(volume) / Path(REPOSITORY).relative_to(HOME) / "data"
    return {p.name: p.stat().st_size for p in data.rglob("*") if p.is_file()} if data.is_dir() else {}


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
    return output_of(docker("logs", name))


def write_random_file(path, size, mode=0o644):
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    os.chmod(path, mode)


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


def ofelia_exec(job_name, timeout=300):
    """One job-exec of ofelia-config.ini, as ofelia runs it: `docker exec --user USER CONTAINER ARGV…`
    (no terminal), the command split like a shell would."""
    job = ofelia_jobs("job-exec")[job_name]
    return docker("exec", "--user", job.get("user", "root"), job["container"], *shlex.split(job["command"]),
                  check=False, timeout=timeout)


class Compose:
    """docker-compose in a project directory, as a user types it there."""

    def __init__(self, directory):
        self.directory = Path(directory)

    def __call__(self, *args, files=(), timeout=300, env=None):
        argv = ["docker-compose"] + [part for name in files for part in ("-f", name)] + list(args)
        # Debian's client for `run` (compose calls `docker start --attach`): the first on PATH otherwise.
        environment = {**os.environ, "PATH": f"{Path(DOCKER).parent}:{os.environ.get('PATH', '')}", **(env or {})}
        return subprocess.run(argv, cwd=self.directory, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=environment)

    # `run --rm` containers in a network namespace of their own, as on the default bridge network.
    ISOLATED = ("docker-compose.yaml", "docker-compose.override.yaml", "isolated.yaml")


def compose_config():
    """docker-compose.yaml as `docker-compose config` resolves it, with .env made from .env.example."""
    return _compose_cache.setdefault("config", _load_compose())


_compose_cache = {}


def _parse_yaml(text):
    # Debian's docker-compose runs on the system Python, which has PyYAML: parse with that one.
    compose = shutil.which("docker-compose")
    interpreter = Path(compose).read_text(errors="replace").splitlines()[0].lstrip("#!").split()
    parsed = subprocess.run(
        interpreter + ["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
        input=text, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(parsed.stdout)


def _load_compose():
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"{PREFIX}compose-{TOKEN}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        for name in ("docker-compose.yaml", "ofelia-config.ini", "Dockerfile"):
            shutil.copy(ROOT / name, work / name)
        shutil.copy(ROOT / ".env.example", work / ".env")
        result = Compose(work)("config")
        assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
        return _parse_yaml(result.stdout)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The directory to back up: world-readable files, and what only root or another user may read."""
    work = tmp_path_factory.mktemp("container")
    data = work / "data"
    data.mkdir()
    (data / "notes.txt").write_text("cloud-backup container test\n")
    write_random_file(data / "random.bin", 2_000_000)
    write_random_file(data / "root-only.key", 3_000, mode=0o600)
    service = data / "service"
    service.mkdir()
    write_random_file(service / "db.sqlite", 300_000, mode=0o600)
    os.chown(service / "db.sqlite", OTHER_UID, OTHER_UID)
    os.chown(service, OTHER_UID, OTHER_UID)
    os.chmod(service, 0o700)
    for path in (work, data):
        os.chmod(path, 0o755)
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
    return {"backup": str(uuid.uuid4()), "forget": str(uuid.uuid4()), "check": str(uuid.uuid4()), "drill": str(uuid.uuid4())}


@pytest.fixture(scope="module")
def env_file(workspace, recorder, checks):
    """The user's .env: .env.example with the blanks filled in (so the template itself is exercised)."""
    values = {
        "RESTIC_PASSWORD": secrets.token_urlsafe(18),
        "RESTIC_REST_PORT": str(free_port()),
        "BACKUP_CHECK_URL": f"http://127.0.0.1:{recorder['port']}/{checks['backup']}",
        "FORGET_CHECK_URL": f"http://127.0.0.1:{recorder['port']}/{checks['forget']}",
        "CHECK_CHECK_URL": f"http://127.0.0.1:{recorder['port']}/{checks['check']}",
        "DRILL_CHECK_URL": f"http://127.0.0.1:{recorder['port']}/{checks['drill']}",
        "LOCK_WAIT_SECONDS": "30",
    }
    return env_from_example(values, workspace / "env")


def env_from_example(values, path):
    """Writes .env.example to `path` (mode 0600) with the lines of `values` set, as a user fills it in."""
    values = dict(values)
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name = re.match(r"#?([A-Z][A-Z0-9_]*)=", line)
        if name and name.group(1) in values:
            line = f"{name.group(1)}={values.pop(name.group(1))}"
        lines.append(line)
    assert not values, f".env.example lacks {sorted(values)}"
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return path


@pytest.fixture(scope="module")
def project(workspace, env_file):
    """The VM's directory, as the README has the user make it, plus this machine's override."""
    directory = workspace / "vm"
    directory.mkdir()
    for name in ("docker-compose.yaml", "ofelia-config.ini"):
        shutil.copy(ROOT / name, directory / name)
    shutil.copy(env_file, directory / ".env")
    (directory / "logs").mkdir()
    # Where restores go (the commented volume in docker-compose.yaml), writable by the image's user.
    restore = directory / "restore"
    restore.mkdir()
    os.chown(restore, IMAGE_UID, IMAGE_UID)
    override = {"services": {
        "cloud-backup": {
            "build": {"context": str(ROOT), "dockerfile": "docker/Dockerfile.prebuilt", "network": "host"},
            "network_mode": "host",
            "volumes": [f"{workspace / 'data'}:/backup/dir1:ro", f"{restore}:/restore"],
        },
        # ofelia's image cannot be fetched here: a stand-in with its mounts (the engine's socket for
        # /var/run/docker.sock), so that `up -d` starts the whole file; its jobs run as ofelia_exec().
        "ofelia": {
            "image": "debian:trixie-slim",
            "entrypoint": ["sh", "-c"],
            "command": ["trap 'exit 0' TERM; sleep infinity & wait"],
            "network_mode": "none",
            "volumes": [f"{ENGINE / 'docker.sock'}:/var/run/docker.sock:ro"],
        },
    }}
    # JSON is YAML.
    (directory / "docker-compose.override.yaml").write_text(json.dumps(override, indent=2) + "\n")
    # `run --rm` containers in a network namespace of their own, as on compose's default bridge network:
    # an internal network (a bridge without a gateway). Not `none`: compose links a one-off container to
    # the service's running one, which Docker refuses without a bridge-type network.
    network = f"{PREFIX}isolated-{TOKEN}"
    docker("network", "rm", network, check=False)
    docker("network", "create", "--internal", network)
    (directory / "isolated.yaml").write_text(json.dumps({"services": {"cloud-backup": {"network_mode": network}}}) + "\n")
    compose = Compose(directory)
    try:
        yield compose
    finally:
        result = compose("down", "--volumes", "--timeout", "5", timeout=120)
        docker("network", "rm", network, check=False)
    assert result.returncode == 0, output_of(result)


@pytest.fixture(scope="module")
def built(project):
    return project("build", timeout=600)


@pytest.fixture(scope="module")
def configured(project, built):
    return project("run", "--rm", "cloud-backup", "config")


@pytest.fixture(scope="module")
def home_volume(project):
    return f"{project.directory.name}_home"


@pytest.fixture(scope="module")
def server(project, configured):
    """`docker-compose up -d`: the server container (its name is fixed by docker-compose.yaml)."""
    started = time.monotonic()
    result = project("up", "-d")
    assert result.returncode == 0, output_of(result)
    name = compose_config()["services"]["cloud-backup"]["container_name"]
    status = wait_until(lambda: health(name).get("Status") in ("healthy", "unhealthy") and health(name)["Status"],
                        90, 0.5, f"{name}'s health check")
    return {"name": name, "up": result, "health": status, "seconds": time.monotonic() - started}


def bring_up(project, name):
    """After a stop or a kill: `docker-compose up -d` again, and the server answering."""
    result = project("up", "-d")
    assert result.returncode == 0, output_of(result)
    wait_until(lambda: server_ready(name), 60, 0.3, f"{name} to serve again")


# --- the image -------------------------------------------------------------------------------

def test_image_configuration():
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", IMAGE).stdout)
    assert config["Entrypoint"] == ENTRYPOINT
    assert config["Cmd"] == ["start-server"]
    assert config["User"] == IMAGE_USER
    assert config["WorkingDir"] == "/backup"
    assert HOME in (config.get("Volumes") or {})
    check = config["Healthcheck"]
    assert check["Test"] == ["CMD", "cloud-backup", "server-status"]
    assert check["Interval"] <= 10 * 10**9, "healthy within about 10 s of the start (the first probe comes after one interval)"


def test_image_contents():
    script = r"""
set -e
echo "user=$(id -un) uid=$(id -u) home=$HOME pwd=$(pwd)"
restic version
rclone version | sed -n 1p
oidc-gen --version
tini --version
ps --version
for tool in ps kill pgrep; do test -x "/usr/bin/$tool" && echo "has $tool"; done
test -x /usr/local/bin/cloud-backup
ldd /usr/local/bin/cloud-backup
ls /usr/lib/*/libcurl.so.4
echo "apt-lists=$(ls -A /var/lib/apt/lists | wc -l) apt-cache=$(find /var/cache/apt -type f | wc -l)"
for dir in .config/rclone .config/oidc-agent .cache .local/state; do test -O "$HOME/$dir" && echo "owned $dir"; done
echo "read-all: $(getcap /usr/local/libexec/cloud-backup/restic) $(stat -c '%U:%G %a' /usr/local/libexec/cloud-backup/restic)"
cmp /usr/bin/restic /usr/local/libexec/cloud-backup/restic && echo "read-all restic is restic"
"""
    out = docker("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", IMAGE, "-c", script).stdout
    assert "user=user uid=1000 home=/home/user pwd=/backup" in out
    assert re.search(r"^restic 0\.18\.", out, re.M), out
    assert re.search(r"^rclone v1\.", out, re.M), out
    assert re.search(r"^oidc-gen \d", out, re.M), out
    assert "tini version" in out
    assert re.search(r"^ps from procps", out, re.M), out
    assert "has ps" in out and "has kill" in out and "has pgrep" in out, out
    assert "not found" not in out, f"the binary misses a shared library:\n{out}"
    assert "/libcurl.so.4" in out, "libcurl is there for Healthchecks pings (URLSession)"
    assert "apt-lists=0 apt-cache=0" in out
    for dir in (".config/rclone", ".config/oidc-agent", ".cache", ".local/state"):
        assert f"owned {dir}" in out
    assert re.search(r"read-all: \S+restic cap_dac_read_search=ep root:user 750", out), out
    assert "read-all restic is restic" in out


def test_entrypoint_passes_subcommands_through():
    result = docker("run", "--rm", "--network", "none", IMAGE, "--version")
    assert result.stdout.strip().startswith("cloud-backup ")
    result = docker("run", "--rm", "--network", "none", IMAGE, "no-such-subcommand", check=False)
    assert result.returncode == 64


def test_the_read_all_restic_runs_only_with_the_capability():
    """The kernel refuses a file capability the container's bounding set lacks: this is why the plain
    restic stays, and why cloud-backup looks before it uses the other one."""
    plain = docker("run", "--rm", "--network", "none", "--entrypoint", READ_ALL_RESTIC, IMAGE, "version", check=False)
    assert plain.returncode != 0 and "operation not permitted" in output_of(plain).lower(), output_of(plain)
    added = docker("run", "--rm", "--network", "none", "--cap-add", "DAC_READ_SEARCH", "--entrypoint", READ_ALL_RESTIC, IMAGE, "version")
    assert added.stdout.startswith("restic 0.18"), output_of(added)
    # The container's user itself has no capability: only that restic gets one.
    caps = docker("run", "--rm", "--network", "none", "--cap-add", "DAC_READ_SEARCH", "--entrypoint", "grep", IMAGE,
                  "^CapEff", "/proc/self/status").stdout
    assert caps.split() == ["CapEff:", "0000000000000000"], caps


def test_without_the_capability_the_backup_says_how_to_add_it(workspace, env_file):
    """`docker run` without --cap-add: what uid 1000 may not read is skipped (exit 3), and the message
    names the fix. The restore of that snapshot has what could be read."""
    result = docker("run", "--rm", "--network", "none", "--hostname", VM_HOSTNAME, "--env-file", str(env_file),
                    "--env", "BACKUP_CHECK_URL=", "--volume", f"{workspace / 'data'}:/backup/dir1:ro",
                    IMAGE, "backup", "/backup/dir1", check=False)
    output = output_of(result)
    assert result.returncode == 3, output
    assert "/backup/dir1/root-only.key" in output and "/backup/dir1/service" in output, output
    assert "add the DAC_READ_SEARCH capability" in output, output
    assert "`cap_add: [DAC_READ_SEARCH]`" in output and "`--cap-add DAC_READ_SEARCH`" in output, output
    status = docker("run", "--rm", "--network", "none", "--env-file", str(env_file), "--env", "BACKUP_CHECK_URL=",
                    "--env", "FORGET_CHECK_URL=", "--env", "CHECK_CHECK_URL=", IMAGE, "status", check=False).stdout
    assert re.search(r"✓ read access: backups read only what uid 1000 may read; .*`cap_add: \[DAC_READ_SEARCH\]`", status), status


# --- docker-compose, as the README says ------------------------------------------------------

def test_compose_build(built):
    """`docker-compose build` (1.29: the legacy builder) from the checkout."""
    assert built.returncode == 0, output_of(built)
    assert f"Successfully tagged {IMAGE}" in output_of(built), output_of(built)


def test_first_run_config(configured):
    """`docker-compose run --rm cloud-backup config`, no terminal: checks the destination, creates the repository."""
    output = output_of(configured)
    assert configured.returncode == 0, output
    assert "✓ repository created" in output, output
    assert "docker-compose up -d" in output and "docker compose up -d" in output, "Next steps name both compose commands"
    assert "docker exec --user user cloud-backup cloud-backup status" in output, output


def test_up_and_healthy(server, project):
    """`docker-compose up -d` starts both services; Docker's health check says healthy within seconds."""
    assert server["health"] == "healthy", last_health_output(server["name"])
    assert server["seconds"] < 30, f"healthy only after {server['seconds']:.0f} s"
    print(f"healthy {server['seconds']:.1f} s after `docker-compose up -d`")
    assert "REST server ready on 127.0.0.1" in last_health_output(server["name"])
    ps = project("ps")
    assert re.search(r"^cloud-backup\s.*Up.*\(healthy\)", ps.stdout, re.M), ps.stdout
    assert re.search(r"^cloud-backup-ofelia\s.*Up", ps.stdout, re.M), ps.stdout
    server_log = logs(server["name"])
    assert "127.0.0.1" in server_log and "only" in server_log, "without credentials the server must stay on loopback"
    inspect = json.loads(docker("inspect", "--format", "{{json .HostConfig.CapAdd}}", server["name"]).stdout)
    assert [c.removeprefix("CAP_") for c in inspect] == ["DAC_READ_SEARCH"], inspect


def test_backup_via_exec_as_user(server, recorder, checks, home_volume):
    """What ofelia's job-exec does: `docker exec --user user cloud-backup cloud-backup backup …`."""
    result = docker("exec", "--user", IMAGE_USER, server["name"], "cloud-backup", "backup", "--tag", "first", "/backup/dir1",
                    check=False)
    output = output_of(result)
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
    assert set(jobs) == {"check-refresh-token", "backup", "forget", "check", "drill"}
    for name in ("backup", "forget", "check", "drill", "check-refresh-token"):
        result = ofelia_exec(name)
        output = output_of(result)
        if name in LOGIN_SUBCOMMANDS:
            assert result.returncode == 0 and "nothing to check" in output, output
        else:
            assert result.returncode == 0, f"{jobs[name]['command']}:\n{output}"
    assert [ping_kind(p) for p in pings_for(recorder, checks["forget"])] == ["start", "0"]
    assert [ping_kind(p) for p in pings_for(recorder, checks["check"])] == ["start", "0"]
    drill = pings_for(recorder, checks["drill"])
    assert [ping_kind(p) for p in drill] == ["start", "0"]
    assert drill[1]["body"].startswith("drill finished: "), drill[1]["body"]
    assert lock_files(home_volume) == []


def test_every_file_is_backed_up_and_restored(server, project, workspace):
    """With the compose file's cap_add, root's 0600 file and another user's 0700 directory are in the
    snapshot; restored as the user they belong to uid 1000, restored as root (the README's command) they
    keep their owners and modes, byte for byte."""
    name = server["name"]
    listing = docker("exec", "--user", IMAGE_USER, name, "cloud-backup", "restic", "ls", "--recursive", "latest", "/backup/dir1").stdout
    for path in ("/backup/dir1/root-only.key", "/backup/dir1/service", "/backup/dir1/service/db.sqlite"):
        assert re.search(rf"^{re.escape(path)}$", listing, re.M), listing

    as_user = docker("exec", "--user", IMAGE_USER, name, "cloud-backup", "restic", "restore", "latest", "--target", "/restore/user", check=False)
    assert as_user.returncode == 0, output_of(as_user)
    as_root = docker("exec", "--user", "root", "--env", "HOME=/home/user", name,
                     "cloud-backup", "restic", "restore", "latest", "--no-cache", "--target", "/restore/root", check=False)
    assert as_root.returncode == 0, output_of(as_root)

    data = workspace / "data"
    for target, owners in (("user", False), ("root", True)):
        restored = project.directory / "restore" / target / "backup" / "dir1"
        for relative in ("notes.txt", "random.bin", "root-only.key", "service/db.sqlite"):
            original, copy = data / relative, restored / relative
            assert filecmp.cmp(original, copy, shallow=False), f"{copy} differs from {original}"
            if owners:
                assert (copy.stat().st_uid, copy.stat().st_gid) == (original.stat().st_uid, original.stat().st_gid), copy
                assert copy.stat().st_mode == original.stat().st_mode, copy
            else:
                assert copy.stat().st_uid == IMAGE_UID, copy
        directory = restored / "service"
        if owners:
            assert (directory.stat().st_uid, oct(directory.stat().st_mode & 0o777)) == (OTHER_UID, "0o700")
    # Root used the user's settings and left nothing of its own in the user's home.
    leftovers = docker("exec", "--user", "root", name, "find", HOME, "-not", "-user", IMAGE_USER).stdout
    assert leftovers.strip() == "", f"root's restore left files the user does not own:\n{leftovers}"


def test_status_in_the_server_container_and_in_a_run_container(server, project):
    """`status` where the README says to run it, and in a `run --rm` container of its own network
    namespace, where it must say that the server runs elsewhere instead of calling it down."""
    inside = docker("exec", "--user", IMAGE_USER, server["name"], "cloud-backup", "status", check=False)
    assert inside.returncode == 0, output_of(inside)
    assert "✓ REST server: ready on 127.0.0.1" in inside.stdout, inside.stdout
    assert "✓ read access: backups read every file (restic with the DAC_READ_SEARCH capability)" in inside.stdout, inside.stdout
    elsewhere = project("run", "--rm", "cloud-backup", "status", files=Compose.ISOLATED)
    assert "✓ REST server: runs in another container" in elsewhere.stdout, output_of(elsewhere)
    assert "docker exec --user user cloud-backup cloud-backup status" in elsewhere.stdout, elsewhere.stdout
    assert "nothing answers" not in elsewhere.stdout


def test_snapshots_from_a_serverless_container(server, project):
    result = project("run", "--rm", "cloud-backup", "restic", "snapshots", "--json", files=Compose.ISOLATED)
    assert result.returncode == 0, output_of(result)
    snapshots = json.loads(result.stdout)
    assert len(snapshots) >= 2, snapshots
    hostname = compose_config()["services"]["cloud-backup"]["hostname"]
    assert {s["hostname"] for s in snapshots} == {hostname}, "hostname: (compose) should name the VM"
    assert ["/backup/dir1"] in [s["paths"] for s in snapshots]
    assert ["/backup"] in [s["paths"] for s in snapshots], "the ofelia backup job saves /backup"
    assert "destination directly" in result.stderr


def test_unhealthy_when_no_server_answers(env_file):
    """A server that cannot serve its destination (rclone keeps failing): the health check says why."""
    name = f"{PREFIX}unhealthy-{TOKEN}"
    remove_container(name)
    try:
        docker("run", "--detach", "--name", name, "--network", "host", "--env-file", str(env_file),
               "--env", f"RESTIC_REST_PORT={free_port()}", "--health-interval", "1s",
               "--env", "BACKUP_REMOTE=:ftp,host=127.0.0.1,port=9,user=x,pass=wRUJSEVLuoSR2EcZUFYcLhS06R1IBUE5:bucket", IMAGE)
        wait_until(lambda: "restarting" in logs(name), 30, 0.2, "rclone to fail")
        status = docker("exec", "--user", IMAGE_USER, name, "cloud-backup", "server-status", check=False)
        assert status.returncode != 0, output_of(status)
        # Docker's own runs of the health check give the server's reason, from its record.
        output = wait_until(lambda: "connection refused" in last_health_output(name) and last_health_output(name), 20, 0.5,
                            "a failed health check")
        assert "the REST server is not ready" in output, output
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
        docker("run", "--detach", "--name", name, "--network", "none", "--cap-add", "DAC_READ_SEARCH", "--health-interval", "1s",
               "--env-file", str(env_file), "--env-file", str(credentials), "--volume", f"{volume}:{HOME}",
               "--volume", f"{workspace / 'data'}:/backup/dir1:ro", IMAGE)
        wait_until(lambda: health(name).get("Status") == "healthy", 60, 0.5, f"{name} to be healthy")
        assert "authentication required" in logs(name)
        result = docker("exec", "--user", IMAGE_USER, name, "cloud-backup", "backup", "/backup/dir1", check=False)
        assert result.returncode == 0, output_of(result)
        assert "REST server" in output_of(result)
        wrong = docker("exec", "--user", IMAGE_USER, "--env", "RESTIC_REST_PASSWORD=not-the-password", name,
                       "cloud-backup", "server-status", check=False)
        assert wrong.returncode == 1 and "refuses" in wrong.stdout, output_of(wrong)
    finally:
        remove_container(name)
        docker("volume", "rm", "--force", volume, check=False)


# --- stopping and killing the server container -----------------------------------------------

def test_stop_idle_server(server, project, home_volume):
    name = server["name"]
    started = time.monotonic()
    docker("stop", name)
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"docker stop took {elapsed:.1f} s"
    assert state(name)["ExitCode"] == 0, state(name)
    assert "REST server stopped" in logs(name)
    assert lock_files(home_volume) == []
    bring_up(project, name)


def test_stop_during_a_backup_leaves_no_lock(server, project, home_volume, workspace, recorder, checks):
    """The strongest case: `docker stop` while a job started by `docker exec` is writing; then the next job."""
    name = server["name"]
    write_random_file(workspace / "data" / "slow.bin", 6_000_000)  # new data: at 400 KiB/s this takes ~15 s
    before = len(pings_for(recorder, checks["backup"]))
    job = subprocess.Popen([DOCKER, "exec", "--user", IMAGE_USER, name, "cloud-backup", "backup",
                            "--limit-upload", "400", "/backup/dir1"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: lock_files(home_volume) or job.poll() is not None, 30, 0.1, "restic's lock")
        if job.poll() is not None:
            pytest.fail(f"the backup ended (exit {job.returncode}) before it could be stopped:\n{job.stdout.read()}")
        time.sleep(1.5)  # restic is uploading now
        assert job.poll() is None, "the backup ended before the stop: make it slower"
        started = time.monotonic()
        docker("stop", name)
        elapsed = time.monotonic() - started
        output, _ = job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
    server_log = logs(name)
    assert elapsed < 10, f"docker stop took {elapsed:.1f} s\n{server_log}"
    assert state(name)["ExitCode"] == 0, f"{state(name)}\n{server_log}"
    assert "stopping the running jobs" in server_log, server_log
    # restic 0.18 may end an interrupted backup with exit 1 ("context canceled"); the job still reports 130.
    assert job.returncode == 130, f"the job should stop on request (130), not finish or be killed:\n{output}"
    assert "received SIGTERM" in output, output
    assert lock_files(home_volume) == [], f"restic left its lock behind:\n{output}"
    final = pings_for(recorder, checks["backup"])[before:]
    assert [ping_kind(p) for p in final][:1] == ["start"], final
    assert ping_kind(final[-1]) == "130", f"no interruption ping: {final}"
    # Nothing holds the repository; the next scheduled backup runs as usual.
    locks = project("run", "--rm", "cloud-backup", "restic", "list", "locks", "--no-lock", files=Compose.ISOLATED)
    assert locks.returncode == 0 and locks.stdout.strip() == "", output_of(locks)
    bring_up(project, name)
    result = ofelia_exec("backup")
    assert result.returncode == 0, output_of(result)


def test_kill_during_a_backup_then_the_next_jobs(server, project, home_volume, workspace):
    """`docker kill` (SIGKILL for the whole container) after the backup uploaded some data: its lock and
    that data stay. The next jobs, as scheduled: the backup runs, forget removes the lock (its restic has
    provably ended), check explains the data nothing uses, and `cloud-backup restic prune` removes it."""
    name = server["name"]
    write_random_file(workspace / "data" / "big.bin", 40_000_000)
    packs_before = pack_files(home_volume)
    job = subprocess.Popen([DOCKER, "exec", "--user", IMAGE_USER, name, "cloud-backup", "backup",
                            "--pack-size", "4", "--limit-upload", "2000", "/backup/dir1"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def new_full_pack():
            return job.poll() is not None or any(size >= 4 * 1024 * 1024 for pack, size in pack_files(home_volume).items()
                                                 if pack not in packs_before)
        wait_until(new_full_pack, 60, 0.1, "a pack of the backup to be uploaded")
        assert job.poll() is None, f"the backup ended before the kill:\n{job.stdout.read()}"
        docker("kill", name)
        output, _ = job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
    assert not state(name)["Running"]
    assert lock_files(home_volume), f"SIGKILL leaves restic's lock:\n{output}"

    bring_up(project, name)
    backup = ofelia_exec("backup")
    assert backup.returncode == 0, output_of(backup)
    forget = ofelia_exec("forget")
    assert forget.returncode == 0, output_of(forget)
    assert "removed 1 stale lock whose holder has provably ended" in output_of(forget), output_of(forget)
    assert lock_files(home_volume) == []
    check = ofelia_exec("check")
    assert check.returncode == 0, output_of(check)
    assert re.search(r"check finished: no errors were found; \d+ additional files? \(data no snapshot uses\) found: "
                     r"what interrupted backups leave behind, harmless", output_of(check)), output_of(check)
    prune = docker("exec", "--user", IMAGE_USER, name, "cloud-backup", "restic", "prune", check=False)
    assert prune.returncode == 0, output_of(prune)
    again = ofelia_exec("check")
    assert again.returncode == 0 and "additional file" not in output_of(again), output_of(again)


# --- the distribution files ------------------------------------------------------------------

def test_compose_file_validates_and_matches_the_image():
    config = compose_config()
    services = config["services"]
    assert set(services) == {"cloud-backup", "ofelia"}
    backup = services["cloud-backup"]
    assert backup["command"] in ("start-server", ["start-server"])
    assert backup.get("hostname"), "a stable hostname names the VM in snapshots"
    assert backup.get("container_name")
    assert backup.get("cap_add") == ["DAC_READ_SEARCH"], "backups read every file (README, docs/design.md)"
    assert backup["build"]["context"] and backup["build"].get("dockerfile", "Dockerfile") == "Dockerfile", \
        "a fresh checkout builds the root Dockerfile (from source)"
    assert "target" not in backup["build"], "compose 1.29's legacy builder would still build every stage"
    assert any(v.split(":")[1] == HOME for v in backup["volumes"] if v.count(":") >= 1), backup["volumes"]
    assert any(v.split(":")[1].startswith("/backup/") for v in backup["volumes"]), backup["volumes"]
    ofelia = services["ofelia"]
    assert ofelia["image"].startswith("mcuadros/ofelia")
    assert "cloud-backup" in ofelia["depends_on"]
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in ofelia["volumes"]
    assert any(v.endswith(":/etc/ofelia/config.ini:ro") and "ofelia-config.ini" in v for v in ofelia["volumes"])
    assert "--config=/etc/ofelia/config.ini" in ofelia["command"]


def test_compose_header_shows_both_compose_commands():
    header = "\n".join(line for line in (ROOT / "docker-compose.yaml").read_text().splitlines() if line.startswith("#"))
    for command in ("build", "run --rm cloud-backup config", "up -d"):
        assert f"docker compose {command}" in header and f"docker-compose {command}" in header, command
    assert "docker exec --user user cloud-backup cloud-backup status" in header
    assert "docker exec --user root --env HOME=/home/user cloud-backup cloud-backup restic restore latest --no-cache --target /restore" in header


def dockerfile_stages(path):
    """(name, base, instructions) for each FROM of a Dockerfile, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            if current.strip():
                instructions.append(current.strip())
            current = ""
    stages = []
    for instruction in instructions:
        keyword = instruction.split()[0].upper()
        if keyword == "FROM":
            words = instruction.split()
            stages.append({"base": words[1], "name": words[3] if len(words) > 3 else None, "steps": []})
        elif stages:
            stages[-1]["steps"].append(instruction)
    return stages


def checkout_files():
    """What a fresh clone holds: the tracked files, and those about to be (not ignored)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return {name for name in listed if (ROOT / name).exists()}


def test_root_dockerfile_builds_from_a_fresh_checkout_with_any_builder():
    """Every stage is needed by the image (the legacy builder of docker-compose 1.29 builds them all), and
    every file it copies from the build context is in a fresh checkout."""
    stages = dockerfile_stages(ROOT / "Dockerfile")
    assert [s["name"] for s in stages] == ["build", "runtime"], stages
    assert stages[0]["base"] == "${SWIFT_IMAGE}" and stages[1]["base"] == "${RUNTIME_IMAGE}"
    assert any("--from=build" in step for step in stages[1]["steps"]), "the runtime stage uses the build stage"
    assert any("libcurl4-openssl-dev" in step for step in stages[0]["steps"]), "the static link needs -lcurl"
    files = checkout_files()
    for stage in stages:
        for step in stage["steps"]:
            words = step.split()
            if words[0] == "COPY" and not any(w.startswith("--from") for w in words):
                for source in [w for w in words[1:-1] if not w.startswith("--")]:
                    assert source in files or any(f.startswith(source.rstrip("/") + "/") for f in files), \
                        f"COPY {source}: not in a fresh checkout"
    for name in ("Package.swift", "Sources/", "Tests/", "docker/"):
        assert re.search(rf"^!{re.escape(name.rstrip('/'))}/?$", (ROOT / ".dockerignore").read_text(), re.M), \
            f".dockerignore leaves out {name}, which a Dockerfile copies"


SWIFT_STAND_IN = """#!/bin/sh
# A stand-in for the Swift toolchain (no registry here to pull the Swift image from): `swift build …`
# has nothing to do, the binary built on the host is already in the bin path it prints.
case " $* " in *" --show-bin-path "*) echo /opt/swift-stand-in/release ;; esac
"""
# The Swift image's binutils: the binary built on the host is stripped already.
STRIP_STAND_IN = "#!/bin/sh\nexit 0\n"


def test_a_fresh_checkout_builds_with_docker_compose(workspace):
    """`docker-compose build` (1.29: the legacy builder, which builds every stage) in a fresh checkout, with
    the shipped docker-compose.yaml and the root Dockerfile. The Swift image cannot be pulled here, so a
    stand-in tagged as it is gives `swift` (its build hands over the binary built on the host); the rest
    of the build stage runs as written (libcurl's development files installed, strip), then the runtime."""
    checkout = workspace / "checkout"
    for name in checkout_files():
        target = checkout / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    shutil.copy(ROOT / ".env.example", checkout / ".env")
    assert not (checkout / ".build-release").exists(), "a fresh checkout has no binary"
    (checkout / "docker-compose.override.yaml").write_text(json.dumps(
        {"services": {"cloud-backup": {"image": f"{PREFIX}fresh:{TOKEN}", "build": {"network": "host"}}}}) + "\n")
    stand_in = workspace / "swift-stand-in"
    stand_in.mkdir()
    shutil.copy(ROOT / ".build-release/container/cloud-backup", stand_in / "cloud-backup")
    for name, text in (("swift", SWIFT_STAND_IN), ("strip", STRIP_STAND_IN)):
        (stand_in / name).write_text(text)
        os.chmod(stand_in / name, 0o755)
    (stand_in / "Dockerfile").write_text(
        "FROM debian:trixie-slim\n"
        "COPY swift strip /usr/local/bin/\n"
        "COPY cloud-backup /opt/swift-stand-in/release/cloud-backup\n")
    swift_image = re.search(r"^ARG SWIFT_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M).group(1)
    try:
        docker("build", "--network", "host", "--tag", swift_image, str(stand_in), timeout=300)
        result = Compose(checkout)("build", timeout=600)
        output = output_of(result)
        assert result.returncode == 0, output[-3000:]
        assert re.search(r"^Step \d+/\d+ : FROM \$\{SWIFT_IMAGE\} AS build$", output, re.M), "the build stage was built"
        assert f"Successfully tagged {PREFIX}fresh:{TOKEN}" in output, output[-3000:]
        version = docker("run", "--rm", "--network", "none", f"{PREFIX}fresh:{TOKEN}", "--version")
        assert version.stdout.startswith("cloud-backup "), output_of(version)
    finally:
        docker("image", "rm", "--force", f"{PREFIX}fresh:{TOKEN}", swift_image, check=False)


def test_prebuilt_dockerfile_is_the_runtime_stage_with_the_host_binary():
    """docker/Dockerfile.prebuilt (what these tests build) is the root Dockerfile's runtime stage, line for
    line; only where the binary comes from differs."""
    def runtime_lines(path):
        lines = path.read_text().splitlines()
        start = lines.index("FROM ${RUNTIME_IMAGE} AS runtime")
        end = lines.index("# --- end of the runtime stage shared with docker/Dockerfile.prebuilt ---")
        return lines[start:end + 1]
    assert runtime_lines(ROOT / "docker/Dockerfile.prebuilt") == runtime_lines(ROOT / "Dockerfile")
    prebuilt = dockerfile_stages(ROOT / "docker/Dockerfile.prebuilt")
    assert len(prebuilt) == 1 and prebuilt[0]["steps"][-1] == "COPY ${PREBUILT_BINARY} /usr/local/bin/cloud-backup"
    assert "!.build-release/container/cloud-backup" in (ROOT / ".dockerignore").read_text().splitlines()


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
    assert set(execs) == {"check-refresh-token", "backup", "forget", "check", "drill"}
    assert set(locals_) == {"clean-logs"}
    expected_hour = {"check-refresh-token": "1", "backup": "2", "forget": "3", "clean-logs": "4", "check": "5", "drill": "5"}
    for name, job in {**execs, **locals_}.items():
        assert valid_ofelia_schedule(job["schedule"]), f"{name}: {job['schedule']!r}"
        assert job["schedule"].split()[2] == expected_hour[name], f"{name}: {job['schedule']!r}"
        assert not re.search(r"[;#]", job["command"]), "ofelia would cut the command at ; or #"
    assert execs["check"]["schedule"].split()[5] == "0", "the integrity check runs weekly (Sundays)"
    assert execs["drill"]["schedule"].split()[5] == "3", "the restore drill runs weekly (Wednesdays, away from check)"
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
        result = docker("run", "--rm", "--network", "none", IMAGE, subcommand, "--help", check=False)
        assert result.returncode == 0, f"{subcommand}: {result.stderr}"
        assert subcommand in output_of(result)


def documented_variables():
    """Every variable the help documents (HelpText.swift). NAME_FILE is a pattern; RESTIC_REPOSITORY and
    OIDC_SOCK are what the tool sets for its children, not settings."""
    text = (ROOT / "Sources/CloudBackupCore/CLI/HelpText.swift").read_text()
    names = set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", text))
    # TZ, the one setting without an underscore (the schedule's time zone).
    names |= {"TZ"} if re.search(r"^\s+TZ\s", text, re.MULTILINE) else set()
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
