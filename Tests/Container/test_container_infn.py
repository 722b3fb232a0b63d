"""The INFN Cloud chain inside the image (restic 0.18, trixie's rclone and oidc-agent) under Docker, as a
user runs it: `config` in a terminal (`docker run -t`) with the device code approved at the test OpenID
provider, the server container, a backup through `docker exec --user user` (ofelia's job-exec),
snapshots, check-refresh-token, and a stop that leaves no lock. The Ceph RGW (S3 + STS) and the provider
run on the host's loopback (Tests/Fixtures), over HTTPS with a test CA (test_ca.py) that the containers
trust through CLOUD_BACKUP_CA_FILE (a mounted file), then through the image's system store alone; the
containers use `--network host`, and `--cap-add DAC_READ_SEARCH` as the README says for `docker run`.
Secrets reach the containers through --env-file.
"""
import json
import os
import re
import select
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from test_container import (DOCKER, HOME, IMAGE, PREFIX, ROOT, TOKEN, VM_HOSTNAME, docker, free_port, remove_container,
                            wait_until, pings_for)
from test_container import recorder, workspace  # noqa: F401  (module-scoped fixtures shared with this file)

RGW = ROOT / "Tests/Fixtures/ceph/rgw.sh"
# Where the test CA is mounted for CLOUD_BACKUP_CA_FILE, and the image's system bundle (ca-certificates).
CA_IN_CONTAINER = "/etc/cloud-backup/ca.pem"
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@pytest.fixture(scope="module")
def infn_world(tmp_path_factory):
    work = tmp_path_factory.mktemp("infn")
    rgw_dir = work / "rgw"
    tls = work / "tls"
    subprocess.run([sys.executable, str(ROOT / "Tests/Fixtures/test_ca.py"), str(tls)], check=True, capture_output=True, timeout=60)
    subprocess.run([str(RGW), "start", "--tls", str(tls), str(rgw_dir)], check=True, capture_output=True, timeout=300)
    env = json.loads((rgw_dir / "env.json").read_text())
    ready = work / "idp.port"
    idp = subprocess.Popen([sys.executable, str(ROOT / "Tests/Fixtures/oidc_provider.py"), "--state-dir", str(work / "idp"),
                            "--ready-file", str(ready), "--cert-file", str(work / "idp-cert.pem"), "--interval", "1",
                            "--tls", str(tls)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port = int(wait_until(lambda: ready.exists() and ready.read_text().strip(), 20, 0.05, "the OpenID provider"))
        issuer = f"https://127.0.0.1:{port}"
        subprocess.run([str(RGW), "sts-setup", str(rgw_dir), issuer, "object", str(work / "idp-cert.pem"), "IAMaccess"],
                       check=True, capture_output=True, timeout=120)
        assert env["endpoint"].startswith("https://"), env["endpoint"]
        yield {"issuer": issuer, "endpoint": env["endpoint"], "work": work, "ca": tls / "ca.pem"}
    finally:
        idp.terminate()
        idp.wait(timeout=10)
        subprocess.run([str(RGW), "stop", str(rgw_dir)], capture_output=True, timeout=120)


def approve(issuer, code, ca):
    data = urllib.parse.urlencode({"user_code": code}).encode()
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(urllib.request.Request(f"{issuer}/test/approve", data=data), timeout=10, context=context) as answer:
        assert answer.status == 200


def run_interactive(args, issuer, ca, timeout=180):
    """`docker run -t …`: a terminal for the login; approves the code the container shows."""
    process = subprocess.Popen([DOCKER, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    output = b""
    approved = False
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            output += chunk
            match = re.search(rb"enter the code:\s*([A-Z0-9-]+)", output)
            if match and not approved:
                approve(issuer, match.group(1).decode(), ca)
                approved = True
        elif process.poll() is not None:
            break
    process.wait(timeout=30)
    return process.returncode, output.decode(errors="replace")


def test_infn_chain_in_the_image(infn_world, recorder, workspace):
    user = f"user{uuid.uuid4().hex[:6]}"
    check_id, token_id = str(uuid.uuid4()), str(uuid.uuid4())
    env_file = infn_world["work"] / "infn.env"
    env_file.write_text("\n".join([
        f"RESTIC_PASSWORD={secrets.token_urlsafe(18)}",
        f"AAI_USER={user}",
        "BACKUP_BUCKET=vm1",
        f"OIDC_PASSWORD={secrets.token_urlsafe(18)}",
        f"OIDC_ISSUER_URL={infn_world['issuer']}",
        f"S3_ENDPOINT_URL={infn_world['endpoint']}",
        f"RESTIC_REST_PORT={free_port()}",
        f"RESTIC_HOST={VM_HOSTNAME}",
        f"BACKUP_CHECK_URL=http://127.0.0.1:{recorder['port']}/{check_id}",
        f"OIDC_TOKEN_CHECK_URL=http://127.0.0.1:{recorder['port']}/{token_id}",
        f"CLOUD_BACKUP_CA_FILE={CA_IN_CONTAINER}",
    ]) + "\n")
    volume = f"{PREFIX}infn-home-{TOKEN}"
    server = f"{PREFIX}infn-server-{TOKEN}"
    docker("volume", "rm", "--force", volume, check=False)
    docker("volume", "create", volume)
    common = ["--network", "host", "--cap-add", "DAC_READ_SEARCH", "--env-file", str(env_file), "--volume", f"{volume}:{HOME}",
              "--volume", f"{infn_world['ca']}:{CA_IN_CONTAINER}:ro"]
    try:
        code, output = run_interactive(["run", "--rm", "-t", *common, IMAGE, "config"], infn_world["issuer"], infn_world["ca"])
        assert code == 0, output
        for line in ("✓ logged in", "✓ storage reachable", "✓ repository created"):
            assert line in output, output

        remove_container(server)
        docker("run", "--detach", "--name", server, "--hostname", VM_HOSTNAME, *common,
               "--volume", f"{workspace / 'data'}:/backup/dir1:ro", IMAGE)
        wait_until(lambda: docker("exec", "--user", "user", server, "cloud-backup", "server-status", check=False).returncode == 0,
                   60, 0.5, "the INFN server")
        backup = docker("exec", "--user", "user", server, "cloud-backup", "backup", "/backup/dir1", check=False, timeout=300)
        assert backup.returncode == 0, backup.stdout + backup.stderr
        assert "backup using the REST server" in backup.stderr, backup.stderr
        assert [p["path"].rsplit("/", 1)[-1] for p in pings_for(recorder, check_id)] == ["start", "0"]

        snapshots = docker("exec", "--user", "user", server, "cloud-backup", "restic", "snapshots", "--json")
        assert len(json.loads(snapshots.stdout)) == 1

        token = docker("exec", "--user", "user", server, "cloud-backup", "check-refresh-token", check=False)
        assert token.returncode == 0, token.stderr
        assert "days left" in token.stderr
        assert [p["path"].rsplit("/", 1)[-1] for p in pings_for(recorder, token_id)] == ["start", "0"]

        status = docker("exec", "--user", "user", server, "cloud-backup", "status", check=False)
        assert "✓ login: account infncloud loaded" in status.stdout, status.stdout

        started = time.monotonic()
        docker("stop", "--time", "10", server)
        assert time.monotonic() - started < 10
        logs = docker("logs", server).stderr
        assert "REST server stopped" in logs, logs

        # Through the image's system store alone: its bundle with the test CA added, CLOUD_BACKUP_CA_FILE
        # unset. The account made with the CA file follows (no new login); rclone, restic and the tool
        # trust the system's bundle.
        bundle = infn_world["work"] / "system-bundle.pem"
        image_bundle = docker("run", "--rm", "--network", "none", "--entrypoint", "cat", IMAGE, SYSTEM_BUNDLE).stdout
        assert "BEGIN CERTIFICATE" in image_bundle
        bundle.write_text(image_bundle + infn_world["ca"].read_text())
        os.chmod(bundle, 0o644)
        system_env = infn_world["work"] / "infn-system.env"
        system_env.write_text("".join(line + "\n" for line in env_file.read_text().splitlines() if not line.startswith("CLOUD_BACKUP_CA_FILE=")))
        system = docker("run", "--rm", "--network", "host", "--cap-add", "DAC_READ_SEARCH", "--hostname", VM_HOSTNAME, "--env-file", str(system_env),
                        "--volume", f"{volume}:{HOME}", "--volume", f"{bundle}:{SYSTEM_BUNDLE}:ro",
                        "--volume", f"{workspace / 'data'}:/backup/dir1:ro", IMAGE, "backup", "/backup/dir1", check=False, timeout=300)
        assert system.returncode == 0, system.stdout + system.stderr
        assert "now verifies the identity provider with the system's CA store" in system.stderr, system.stderr
    finally:
        remove_container(server)
        docker("volume", "rm", "--force", volume, check=False)
