#!/usr/bin/env python3
"""The cloud-backup benchmark (driven by bench/run, which installs the tools and builds the binary).

Prints figures, never asserts: every PASS/FAIL in the summary is informative, and the exit code is 0
unless the benchmark itself broke. Python 3 standard library only. See bench/README.md.
"""

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

DATA_VERSION = "v1"
DATA_SEED = 20240611
PASSWORD = "cloud-backup-bench-only"
HOST = "bench-host"

# Targets from the issue (URLSession: FoundationNetworking is linked into every start).
RATIO_TARGET = 1.02
MIN_PAIRS = 9  # the wall-time ratio is judged on at least this many pairs
RSS_TARGET_BYTES = 30 * 1000 * 1000  # "30 MB", read strictly as decimal megabytes
RSS_FLAT_TOLERANCE_BYTES = 2 * 1000 * 1000  # "flat": peak spread over 10^3..10^6 lines at most this
HELP_TARGET_MS = 20.0
DEFAULT_IMAGE = "localhost/cloud-backup:test"  # what scripts/test-container builds


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def mb(kib):
    """KiB (what /proc and rusage report) to decimal MB."""
    return kib * 1024 / 1e6


# ----------------------------------------------------------------------------------------------------
# Data set: deterministic, incompressible, nested, >= 300 MB in thousands of files.

def data_plan(files):
    """(relative path, size) for every file, from the seed alone."""
    plan = []
    state = hashlib.sha256(f"{DATA_SEED}".encode()).digest()

    def next_int(bound):
        nonlocal state
        state = hashlib.sha256(state).digest()
        return int.from_bytes(state[:8], "big") % bound

    for index in range(files):
        kind = next_int(100)
        if kind < 80:  # small: 1 KiB .. 64 KiB
            size = 1024 + next_int(63 * 1024)
        elif kind < 98:  # medium: 64 KiB .. 512 KiB
            size = 64 * 1024 + next_int(448 * 1024)
        else:  # large: 1 MiB .. 8 MiB
            size = (1 << 20) + next_int(7 << 20)
        top, middle = index % 25, (index // 25) % 8
        path = f"d{top:02d}/s{middle}/{'t' + str(index % 3) + '/' if index % 5 == 0 else ''}f{index:05d}.bin"
        plan.append((path, size))
    return plan


def generate_data(bench_dir, files, min_bytes):
    data = os.path.join(bench_dir, "data")
    marker = os.path.join(bench_dir, "data.complete")
    plan = data_plan(files)
    total = sum(size for _, size in plan)
    if total < min_bytes:  # scale up every file evenly (deterministically) to reach the minimum
        factor = min_bytes / total
        plan = [(path, int(size * factor) + 1) for path, size in plan]
        total = sum(size for _, size in plan)
    signature = f"{DATA_VERSION} seed={DATA_SEED} files={len(plan)} bytes={total}\n"
    if os.path.exists(marker) and open(marker).read() == signature:
        log(f"reusing the data set in {data} ({len(plan)} files, {total / 1e6:.1f} MB)")
        return data, len(plan), total
    log(f"generating the data set in {data}: {len(plan)} files, {total / 1e6:.1f} MB (once; reused later)")
    if os.path.exists(marker):
        os.remove(marker)
    shutil.rmtree(data, ignore_errors=True)
    for path, size in plan:
        full = os.path.join(data, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as handle:
            handle.write(hashlib.shake_256(f"{DATA_SEED}/{path}".encode()).digest(size))
    with open(marker, "w") as handle:
        handle.write(signature)
    return data, len(plan), total


def warm_read(data):
    total = 0
    for root, _, names in os.walk(data):
        for name in names:
            with open(os.path.join(root, name), "rb") as handle:
                while chunk := handle.read(1 << 20):
                    total += len(chunk)
    return total


# ----------------------------------------------------------------------------------------------------
# Running things.

class Run:
    """One child run, with wall time, exit code and (optionally) its own peak RSS sampled from /proc."""

    def __init__(self, argv, env, sample=False, count_output=False, interval=0.002):
        self.argv, self.env, self.sample, self.count_output, self.interval = argv, env, sample, count_output, interval
        self.vm_hwm_kib = 0          # the process's own VmHWM, last value seen before it exited
        self.rss_parts_kib = {}      # RssAnon/RssFile/RssShmem at the sample where VmRSS was highest
        self.threads = 0             # most threads seen
        self.samples = 0
        self.children_hwm_kib = 0    # the highest VmHWM seen in any direct child (restic)
        self.lines = {"stdout": 0, "stderr": 0}
        self.bytes = {"stdout": 0, "stderr": 0}

    def _drain(self, name, stream):
        lines = count = 0
        while chunk := stream.read1(1 << 16):
            lines += chunk.count(b"\n")
            count += len(chunk)
        self.lines[name], self.bytes[name] = lines, count

    def _sample_once(self, pid, best_rss):
        try:
            with open(f"/proc/{pid}/status", "rb") as handle:
                text = handle.read().decode()
        except OSError:
            return False, best_rss
        fields = {}
        for line in text.splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if "VmHWM" not in fields:  # a zombie: its memory is gone, the last sample stands
            return False, best_rss
        self.samples += 1
        self.vm_hwm_kib = max(self.vm_hwm_kib, int(fields["VmHWM"].split()[0]))
        self.threads = max(self.threads, int(fields.get("Threads", "0")))
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as handle:
                children = handle.read().split()
        except OSError:
            children = []
        for child in children:
            try:
                with open(f"/proc/{child}/status") as handle:
                    for line in handle:
                        if line.startswith("VmHWM:"):
                            self.children_hwm_kib = max(self.children_hwm_kib, int(line.split()[1]))
            except OSError:
                pass
        rss = int(fields["VmRSS"].split()[0])
        if rss >= best_rss:
            best_rss = rss
            self.rss_parts_kib = {k: int(fields[k].split()[0]) for k in ("RssAnon", "RssFile", "RssShmem") if k in fields}
        return True, best_rss

    def go(self):
        output = subprocess.PIPE if self.count_output else subprocess.DEVNULL
        started = time.monotonic()
        process = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
        readers = []
        if self.count_output:
            readers = [threading.Thread(target=self._drain, args=(n, s)) for n, s in
                       (("stdout", process.stdout), ("stderr", process.stderr))]
            for reader in readers:
                reader.start()
        if self.sample:
            best = 0
            while True:
                alive, best = self._sample_once(process.pid, best)
                if not alive:
                    break
                time.sleep(self.interval)
        # Reaped only now: the zombie kept the pid ours while sampling. (rusage's ru_maxrss is no use
        # here: a child spawned with vfork/CLONE_VM inherits its parent's high-water mark at exec.)
        _, status = os.waitpid(process.pid, 0)
        self.seconds = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        self.exit_code = process.returncode
        for reader in readers:
            reader.join()
        if self.count_output:
            process.stdout.close()
            process.stderr.close()
        return self


def clean_environment():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RESTIC_", "BACKUP_", "FORGET_", "CLOUD_BACKUP_", "RCLONE_", "AAI_"))
           and k not in ("LOCK_WAIT_SECONDS", "STOP_GRACE_SECONDS", "PING_TIMEOUT_SECONDS")}
    env["RESTIC_PASSWORD"] = PASSWORD
    return env


def free_loopback_port():
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def restic_init(repository, restic="restic"):
    env = clean_environment()
    env["RESTIC_REPOSITORY"] = repository
    subprocess.run([restic, "--no-cache", "init"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wrapper_env(run_dir, port, path_prefix=None):
    env = clean_environment()
    env["CLOUD_BACKUP_STATE_DIR"] = os.path.join(run_dir, "state")
    env["BACKUP_REMOTE"] = os.path.join(run_dir, "repo")
    env["RESTIC_CACHE_DIR"] = os.path.join(run_dir, "cache")
    env["RESTIC_REST_PORT"] = str(port)
    env["RESTIC_HOST"] = HOST
    if path_prefix:
        env["PATH"] = f"{path_prefix}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def raw_env(run_dir):
    env = clean_environment()
    env["RESTIC_REPOSITORY"] = os.path.join(run_dir, "repo")
    env["RESTIC_CACHE_DIR"] = os.path.join(run_dir, "cache")
    return env


def fresh_run_dir(work, name):
    run_dir = os.path.join(work, name)
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    return run_dir


def settle(run_dir):
    """Outside the timing: flush the run's writes and delete its repository, so runs do not interfere."""
    shutil.rmtree(run_dir, ignore_errors=True)
    os.sync()


# ----------------------------------------------------------------------------------------------------
# 1. Wall-time ratio.

def wall_time_ratio(binary, data, work, pairs, port):
    log(f"wall time: {pairs} pairs, ABBA order, each run on a fresh repository and a fresh cache")
    # Warm-up (untimed): one raw backup to a throwaway repository, one wrapper start.
    warm = fresh_run_dir(work, "warmup")
    restic_init(os.path.join(warm, "repo"))
    Run(["restic", "backup", "--host", HOST, data], raw_env(warm)).go()
    settle(warm)
    Run([binary, "--version"], clean_environment()).go()

    times = {"wrapper": [], "raw": [], "readback": []}
    sequence = []
    for pair in range(pairs):
        order = ("wrapper", "raw") if pair % 2 == 0 else ("raw", "wrapper")
        for kind in order:
            run_dir = fresh_run_dir(work, f"time-{pair}-{kind}")
            restic_init(os.path.join(run_dir, "repo"))
            if kind == "wrapper":
                run = Run([binary, "backup", data], wrapper_env(run_dir, port)).go()
            else:
                run = Run(["restic", "backup", "--host", HOST, data], raw_env(run_dir)).go()
            if run.exit_code != 0:
                raise SystemExit(f"bench: the {kind} backup failed with exit code {run.exit_code} ({run_dir})")
            times[kind].append(run.seconds)
            sequence.append((pair, kind, run.seconds))
            log(f"  pair {pair + 1} {kind:7s} {run.seconds:8.3f} s")
            if kind == "raw":
                # What the wrapper adds after restic's own run (issue 8: proof that the snapshot is there):
                # `restic cat snapshot ID --no-lock`, timed alone on the raw run's repository, untimed for the pair.
                snapshot = sorted(os.listdir(os.path.join(run_dir, "repo", "snapshots")))[0]
                readback = Run(["restic", "cat", "snapshot", snapshot, "--no-lock"], raw_env(run_dir)).go()
                times["readback"].append(readback.seconds)
            settle(run_dir)
    return times, sequence


# ----------------------------------------------------------------------------------------------------
# 2. Peak RSS of the wrapper itself.

FAKE_RESTIC = r'''#!{python}
# A stand-in for restic 0.14: prints FAKE_RESTIC_LINES per-file lines, one write per line like restic
# (Go's unbuffered os.Stdout), every tenth being an error on stderr instead; then the summary; exits 0.
# Text mode: `restic backup -vv` lines (~80 bytes). With --json (which cloud-backup adds itself when its
# stdout is not a terminal): verbose_status lines (~150 bytes), a status line every 1/60 s as restic
# sends them, JSON errors, the JSON summary. Writes its own VmHWM (KiB), the number of per-file lines
# and of errors to FAKE_RESTIC_RSS_FILE.
import json, os, sys, time
count = int(os.environ.get("FAKE_RESTIC_LINES", "0"))
json_mode = "--json" in sys.argv
files = errors = 0
next_status = time.monotonic()
for i in range(count):
    path = "/srv/data/d%02d/s%d/f%07d.bin" % (i % 25, i % 8, i)
    if i % 10 == 9:
        if json_mode:
            line = '{"message_type":"error","error":{"message":"open %s: permission denied"},"during":"archival","item":"%s"}\n' % (path, path)
        else:
            line = "error: open %s: permission denied\n" % path
        os.write(2, line.encode()); errors += 1
        continue
    if json_mode:
        line = ('{"message_type":"verbose_status","action":"new","item":"%s","duration":0.012,'
                '"data_size":%d,"metadata_size":0,"total_files":%d}\n') % (path, 1000 + i % 99991, files + 1)
    else:
        line = "new       %s, saved in 0.012s (%7.3f KiB added)\n" % (path, (i % 997) / 7)
    os.write(1, line.encode()); files += 1
    if json_mode and time.monotonic() >= next_status:
        next_status += 1 / 60
        os.write(1, ('{"message_type":"status","seconds_elapsed":1,"seconds_remaining":9,"percent_done":0.1,'
                     '"total_files":%d,"files_done":%d,"total_bytes":123456789,"bytes_done":12345678,'
                     '"current_files":["%s"]}\n' % (count, files, path)).encode())
if json_mode:
    summary = ('{"message_type":"summary","files_new":%d,"files_changed":0,"files_unmodified":0,"dirs_new":200,'
               '"dirs_changed":0,"dirs_unmodified":0,"data_blobs":%d,"tree_blobs":201,"data_added":1325400064,'
               '"total_files_processed":%d,"total_bytes_processed":1325400064,"total_duration":42.5,'
               '"snapshot_id":"1a2b3c4d5e6f77889900aabbccddeeff00112233445566778899aabbccddeeff"}\n') % (files, files, files)
else:
    summary = ("\nFiles:        %d new,     0 changed,     0 unmodified\n"
               "Dirs:          200 new,     0 changed,     0 unmodified\n"
               "Added to the repo: 1.234 GiB\n\n"
               "processed %d files, 1.234 GiB in 0:42\n"
               "snapshot 1a2b3c4d saved\n") % (files, files)
os.write(1, summary.encode())
if os.environ.get("FAKE_RESTIC_RSS_FILE"):
    with open(os.environ["FAKE_RESTIC_RSS_FILE"], "w") as f:
        hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
        f.write("%s %d %d\n%s\n" % (hwm, files, errors, json.dumps(sys.argv[1:])))
'''

# How cloud-backup is asked to run the fake: its default when stdout is not a terminal (logs, as under
# ofelia or `docker logs`), and with the user's own --json (restic's JSON passed through untouched).
MODES = {"logs": [], "json": ["--json"]}


def install_fake_restic(work):
    fake_bin = os.path.join(work, "fake-bin")
    os.makedirs(fake_bin, exist_ok=True)
    path = os.path.join(fake_bin, "restic")
    with open(path, "w") as handle:
        handle.write(FAKE_RESTIC.replace("{python}", sys.executable))
    os.chmod(path, 0o755)
    return fake_bin, path


def peak_rss(binary, data, work, line_counts, modes, port):
    log("peak RSS: the wrapper's own VmHWM, sampled from /proc every 2 ms until it exits")
    fake_bin, fake = install_fake_restic(work)
    rows = []
    for mode, lines in [(mode, lines) for mode in modes for lines in line_counts]:
        run_dir = fresh_run_dir(work, f"rss-{mode}-{lines}")
        os.makedirs(os.path.join(run_dir, "repo"))
        env = wrapper_env(run_dir, port, path_prefix=fake_bin)
        env["FAKE_RESTIC_LINES"] = str(lines)
        rss_file = os.path.join(run_dir, "fake-rss")
        env["FAKE_RESTIC_RSS_FILE"] = rss_file
        run = Run([binary, "backup", *MODES[mode], "/srv/data"], env, sample=True, count_output=True).go()
        if run.exit_code != 0:
            raise SystemExit(f"bench: the wrapper with the fake restic ({mode}, {lines} lines) exited {run.exit_code}")
        counts, argv_json = open(rss_file).read().splitlines()
        fake_rss, fake_files, fake_errors = (int(x) for x in counts.split())
        # Every per-file line and every error must have come through: the benchmark measured the real path.
        if run.lines["stdout"] < fake_files or run.lines["stderr"] < fake_errors:
            raise SystemExit(f"bench: the wrapper showed {run.lines} lines, the fake restic printed {fake_files} "
                             f"per-file lines and {fake_errors} errors")
        # The fake alone, same output handling, for the wrapper's time overhead.
        alone_env = dict(env)
        alone_env["FAKE_RESTIC_RSS_FILE"] = ""
        alone = Run([fake, *json.loads(argv_json)], alone_env, count_output=True).go()
        rows.append({"label": f"{mode}: {lines:,} lines (fake)", "mode": mode, "lines": lines, "run": run,
                     "fake_rss_kib": fake_rss, "alone_seconds": alone.seconds,
                     "bytes": run.bytes["stdout"] + run.bytes["stderr"]})
        log(f"  {mode:4s} {lines:>9,} lines: VmHWM {mb(run.vm_hwm_kib):6.1f} MB  ({run.samples} samples), {run.seconds:.2f} s")
        shutil.rmtree(run_dir, ignore_errors=True)

    # Reference: the real restic backing up the data set (-vv: one line per file) into a fresh repository.
    run_dir = fresh_run_dir(work, "rss-real")
    restic_init(os.path.join(run_dir, "repo"))
    run = Run([binary, "backup", "-vv", data], wrapper_env(run_dir, port), sample=True, count_output=True).go()
    if run.exit_code != 0:
        raise SystemExit(f"bench: the wrapper with the real restic exited {run.exit_code}")
    rows.append({"label": "logs: real restic -vv", "mode": "logs", "lines": run.lines["stdout"] + run.lines["stderr"], "run": run,
                 "fake_rss_kib": None, "alone_seconds": None, "bytes": run.bytes["stdout"] + run.bytes["stderr"]})
    log(f"  real restic: VmHWM {mb(run.vm_hwm_kib):6.1f} MB, restic's own {mb(run.children_hwm_kib):6.1f} MB, {run.seconds:.2f} s")
    settle(run_dir)

    # Baseline: --help, too short to sample; GNU time's %M is exact for it (no children, and time's own
    # small address space is what the forked child starts from).
    help_kib = None
    if os.path.exists("/usr/bin/time"):
        peaks = []
        for _ in range(5):
            result = subprocess.run(["/usr/bin/time", "-f", "%M", binary, "--help"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True, env=clean_environment())
            peaks.append(int(result.stderr.split()[-1]))
        help_kib = min(peaks)
    return rows, help_kib


# ----------------------------------------------------------------------------------------------------
# 3. --help and --version start-up time.

def startup_times(binary, runs, work):
    results = {}
    hyperfine = shutil.which("hyperfine")
    for argument in ("--help", "--version"):
        if hyperfine:
            export = os.path.join(work, f"hyperfine{argument}.json")
            done = subprocess.run([hyperfine, "-N", "--warmup", "20", "--runs", str(runs), "--export-json", export,
                                   "--style", "none", f"{binary} {argument}"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
            if done.returncode != 0:
                raise SystemExit(f"bench: hyperfine failed: {done.stderr}")
            result = json.load(open(export))["results"][0]
            results[argument] = {"mean": result["mean"] * 1e3, "median": result["median"] * 1e3,
                                 "stddev": (result.get("stddev") or 0) * 1e3, "min": result["min"] * 1e3,
                                 "max": result["max"] * 1e3, "runs": len(result["times"]), "tool": "hyperfine -N"}
        else:
            samples = []
            for index in range(runs + 20):
                started = time.monotonic()
                subprocess.run([binary, argument], stdout=subprocess.DEVNULL, check=True)
                if index >= 20:
                    samples.append((time.monotonic() - started) * 1e3)
            results[argument] = {"mean": statistics.mean(samples), "median": statistics.median(samples),
                                 "stddev": statistics.stdev(samples), "min": min(samples), "max": max(samples),
                                 "runs": runs, "tool": "subprocess loop"}
        r = results[argument]
        log(f"  {argument:9s} mean {r['mean']:.2f} ms, median {r['median']:.2f} ms ({r['runs']} runs, {r['tool']})")
    return results


# ----------------------------------------------------------------------------------------------------
# 4. Sizes: the stripped binary (what the image gets) and the image, when one was built.

def binary_size(binary, work):
    stripped = os.path.join(work, "cloud-backup.stripped")
    if shutil.which("strip") and subprocess.run(["strip", "-o", stripped, binary], stderr=subprocess.DEVNULL).returncode == 0:
        return os.path.getsize(binary), os.path.getsize(stripped)
    return os.path.getsize(binary), None


def image_size(image):
    """(bytes, command) of the image as the engine that has it reports it, or (None, why)."""
    for engine in ("podman", "/usr/bin/docker", "docker"):
        path = shutil.which(engine)
        if not path:
            continue
        command = [path, "image", "inspect", "--format", "{{.Size}}", image]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip().isdigit():
            return int(done.stdout.strip()), " ".join(command[:-2] + ["'{{.Size}}'", image])
    return None, f"no image {image} here (scripts/test-container builds it; BENCH_IMAGE names another)"


# ----------------------------------------------------------------------------------------------------

def verdict(ok):
    return "PASS" if ok else "FAIL"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--bench-dir", default=os.environ.get("BENCH_DIR", "/tmp/cloud-backup-bench"))
    parser.add_argument("--pairs", type=int, default=int(os.environ.get("BENCH_PAIRS", str(MIN_PAIRS))))
    parser.add_argument("--files", type=int, default=int(os.environ.get("BENCH_FILES", "3000")))
    parser.add_argument("--min-mb", type=int, default=int(os.environ.get("BENCH_MIN_MB", "300")))
    parser.add_argument("--lines", default=os.environ.get("BENCH_LINES", "0 1000 10000 100000 1000000"))
    parser.add_argument("--modes", default=os.environ.get("BENCH_MODES", "logs json"))
    parser.add_argument("--help-runs", type=int, default=int(os.environ.get("BENCH_HELP_RUNS", "300")))
    parser.add_argument("--image", default=os.environ.get("BENCH_IMAGE", DEFAULT_IMAGE))
    args = parser.parse_args()
    if args.pairs < MIN_PAIRS:
        log(f"note: {args.pairs} pairs; the wall-time ratio is judged on at least {MIN_PAIRS} (BENCH_PAIRS)")

    binary = os.path.abspath(args.binary)
    os.makedirs(args.bench_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="runs-", dir=args.bench_dir)
    started = time.monotonic()
    load_at_start = os.getloadavg()
    try:
        data, file_count, data_bytes = generate_data(args.bench_dir, args.files, args.min_mb * 1000 * 1000)
        log(f"warm-up read of the data set: {warm_read(data) / 1e6:.1f} MB")
        port = free_loopback_port()
        times, sequence = wall_time_ratio(binary, data, work, args.pairs, port)
        line_counts = [int(n) for n in args.lines.split()]
        modes = args.modes.split()
        rss_rows, help_kib = peak_rss(binary, data, work, line_counts, modes, port)
        log(f"start-up time: {args.help_runs} runs each")
        startup = startup_times(binary, args.help_runs, work)
        sizes = binary_size(binary, work)
        image_bytes, image_command = image_size(args.image)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    restic_version = subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.strip()
    wrapper_version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()

    # ---- Tables
    print()
    print("Backup wall time (seconds; fresh repository and cache each run; ABBA order)")
    print(f"  {'pair':>4}  {'run':7}  {'seconds':>8}")
    for pair, kind, seconds in sequence:
        print(f"  {pair + 1:>4}  {kind:7}  {seconds:8.3f}")
    med_w, med_r = statistics.median(times["wrapper"]), statistics.median(times["raw"])
    ratio = med_w / med_r
    pair_ratios = [w / r for w, r in zip(times["wrapper"], times["raw"])]
    print(f"  median wrapper {med_w:.3f} s, median raw {med_r:.3f} s, ratio {ratio:.4f}; "
          f"per-pair ratios {', '.join(f'{x:.3f}' for x in pair_ratios)}; "
          f"min-vs-min {min(times['wrapper']) / min(times['raw']):.4f}")
    med_readback = statistics.median(times["readback"])
    ratio_less_readback = (med_w - med_readback) / med_r
    print(f"  read-back alone (restic cat snapshot ID --no-lock; one restic start, its scrypt key derivation "
          f"included): median {med_readback:.3f} s; (median wrapper - read-back) / median raw = {ratio_less_readback:.4f}")

    print()
    print("Wrapper's own peak RSS (VmHWM of the cloud-backup process; MB = 10^6 bytes)")
    print(f"  {'restic output':28} {'bytes':>11} {'VmHWM MB':>9} {'anon':>6} {'file':>6} {'thr':>4} "
          f"{'wrapper s':>9} {'alone s':>8} {'restic MB':>9}")
    for row in rss_rows:
        run = row["run"]
        alone = f"{row['alone_seconds']:8.2f}" if row["alone_seconds"] is not None else f"{'-':>8}"
        child = row["fake_rss_kib"] if row["fake_rss_kib"] is not None else run.children_hwm_kib
        print(f"  {row['label']:28} {row['bytes']:>11,} {mb(run.vm_hwm_kib):9.2f} "
              f"{mb(run.rss_parts_kib.get('RssAnon', 0)):6.2f} {mb(run.rss_parts_kib.get('RssFile', 0)):6.2f} "
              f"{run.threads:>4} {run.seconds:9.2f} {alone} {mb(child):9.1f}")
    if help_kib is not None:
        print(f"  {'cloud-backup --help':28} {'-':>11} {mb(help_kib):9.2f}   (GNU time %M, best of 5)")
    print("  anon/file: RssAnon/RssFile at the highest VmRSS sample; thr: most threads seen; alone s: the fake restic")
    print("  by itself with the same output handling; restic MB: restic's (or the fake's) own VmHWM")

    print()
    print("Start-up time (ms)")
    for argument, r in startup.items():
        print(f"  cloud-backup {argument:9} mean {r['mean']:6.2f}  median {r['median']:6.2f}  "
              f"sd {r['stddev']:5.2f}  min {r['min']:6.2f}  max {r['max']:6.2f}  ({r['runs']} runs, {r['tool']})")

    print()
    print("Commands (as run; <run> is a fresh directory per run, <data> the data set)")
    knobs = " ".join(f"{name}={os.environ[name]}" for name in sorted(os.environ) if name.startswith("BENCH_"))
    print(f"  benchmark:    {(knobs + ' ') if knobs else ''}bench/run   (binary {binary})")
    print(f"  wrapper run:  RESTIC_PASSWORD=… CLOUD_BACKUP_STATE_DIR=<run>/state BACKUP_REMOTE=<run>/repo RESTIC_CACHE_DIR=<run>/cache "
          f"RESTIC_REST_PORT=<free port> RESTIC_HOST={HOST} cloud-backup backup <data>")
    print(f"  raw run:      RESTIC_PASSWORD=… RESTIC_REPOSITORY=<run>/repo RESTIC_CACHE_DIR=<run>/cache restic backup --host {HOST} <data>")
    print("                (each after `restic --no-cache init` of <run>/repo; then the directory is deleted and `sync` runs)")
    print("  peak RSS:     PATH=<fake restic>:$PATH FAKE_RESTIC_LINES=N cloud-backup backup [--json] /srv/data   (stdout a pipe; "
          "VmHWM of /proc/PID/status every 2 ms)")
    print("                cloud-backup backup -vv <data>   (the real restic)")
    print(f"  --help RSS:   /usr/bin/time -f %M cloud-backup --help   (best of 5)")
    print(f"  start-up:     hyperfine -N --warmup 20 --runs {args.help_runs} 'cloud-backup --help' (and --version)")
    print(f"  image size:   {image_command}")

    # ---- Summary
    spreads = {}
    for mode in modes:
        peaks = [mb(row["run"].vm_hwm_kib) for row in rss_rows
                 if row.get("mode") == mode and row["fake_rss_kib"] is not None and row["lines"] >= 1000]
        if peaks:
            spreads[mode] = max(peaks) - min(peaks)
    counted = sorted({row["lines"] for row in rss_rows if row["fake_rss_kib"] is not None and row["lines"] >= 1000})
    lines_range = f"{counted[0]:,}..{counted[-1]:,}" if counted else "-"
    if help_kib is not None:
        rss_rows.append({"label": "cloud-backup --help", "run": None, "peak_kib": help_kib})
    for row in rss_rows:
        row.setdefault("peak_kib", row["run"].vm_hwm_kib if row["run"] else 0)
    peak_max = max(mb(row["peak_kib"]) for row in rss_rows)
    help_median = startup["--help"]["median"]
    rss_ok = peak_max * 1e6 <= RSS_TARGET_BYTES
    print()
    print("=" * 100)
    print("cloud-backup benchmark summary")
    print(f"  {wrapper_version}; {restic_version}")
    print(f"  data: {file_count} files, {data_bytes / 1e6:.1f} MB incompressible (seed {DATA_SEED}); "
          f"{os.cpu_count()} CPUs, load average at start {load_at_start[0]:.2f}; "
          f"total {time.monotonic() - started:.0f} s")
    print(f"  {'figure':58} {'value':>16}  {'target':>12}  result")
    enough_pairs = args.pairs >= MIN_PAIRS
    print(f"  {'backup wall time, median wrapper / median raw restic (' + str(args.pairs) + ' pairs)':58} "
          f"{ratio:16.4f}  {'<= 1.02':>12}  {verdict(ratio <= RATIO_TARGET) if enough_pairs else f'(< {MIN_PAIRS} pairs: not judged)'}")
    print(f"  {'  median wrapper / raw restic (s)':58} {f'{med_w:.2f} / {med_r:.2f}':>16}")
    print(f"  {'  read-back after the backup, median (s)':58} {med_readback:16.3f}  {'(issue 8)':>12}")
    print(f"  {'  ratio without the read-back':58} {ratio_less_readback:16.4f}  {'(shown)':>12}")
    print(f"  {'wrapper peak RSS, max over all runs (MB)':58} {peak_max:16.2f}  {'<= 30':>12}  {verdict(rss_ok)}")
    for row in rss_rows:
        print(f"  {'  ' + row['label']:58} {mb(row['peak_kib']):16.2f}")
    for mode, spread in spreads.items():
        print(f"  {f'wrapper peak RSS spread, {mode}, {lines_range} lines (MB)':58} {spread:16.2f}  "
              f"{'flat (<= 2)':>12}  {verdict(spread * 1e6 <= RSS_FLAT_TOLERANCE_BYTES)}")
    print(f"  {'cloud-backup --help, median (ms)':58} {help_median:16.2f}  {'<= 20':>12}  {verdict(help_median <= HELP_TARGET_MS)}")
    print(f"  {'  --help mean (ms)':58} {startup['--help']['mean']:16.2f}")
    version = startup["--version"]
    version_text = f"{version['median']:.2f} / {version['mean']:.2f}"
    print(f"  {'cloud-backup --version, median / mean (ms)':58} {version_text:>16}  {'(none)':>12}")
    full, stripped = sizes
    size_text = f"{full / 1e6:.1f} / {stripped / 1e6:.1f}" if stripped else f"{full / 1e6:.1f} / -"
    print(f"  {'binary size, as built / stripped (MB)':58} {size_text:>16}  {'(none)':>12}")
    image_text = f"{image_bytes / 1e6:.1f}" if image_bytes is not None else "not built"
    print(f"  {'image ' + args.image + ' (MB)':58} {image_text:>16}  {'(printed)':>12}")
    print("=" * 100)


if __name__ == "__main__":
    main()
