import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Every subcommand, each defined once (see `Command`): name, one-line summary, help, argument rule,
/// what it needs and what it runs. The order is the overview's.
public enum Commands {
    public static let all: [Command] = [
        Command(
            name: "config",
            summary: "Set up: INFN Cloud login (device flow), storage access, the repository. Idempotent.",
            help: """
            Usage: cloud-backup config

            Guided, idempotent set-up. For INFN Cloud storage (AAI_USER, BACKUP_BUCKET, OIDC_PASSWORD):
            starts oidc-agent if needed; the first time, logs you in with the device flow (open the address
            shown, enter the code; needs a terminal: `docker compose run --rm cloud-backup config`, or
            `docker-compose run --rm cloud-backup config`); writes the
            infncloud rclone remote and its AWS profile (mode 0600); checks the bucket path (creating it if
            missing). For every destination: creates the repository if there is none (only over a listing
            that shows none). Run again at any time: it checks everything, changes nothing that is right, and
            starts no new login.
            """,
            arguments: .none,
            setup: .configured([], pingsFailureTo: nil) { _, configuration, context in
                InfnLogin(configuration: configuration, context: context, interactive: Commands.interactive).configure()
            }),
        Command(
            name: "start-server",
            summary: "Serve the destination to restic over HTTP (rclone serve restic), in the foreground.",
            help: """
            Usage: cloud-backup start-server

            Runs `rclone serve restic` on the destination in the foreground and keeps it running: rclone is
            restarted if it dies; if it fails to start 5 times in a row (the remote refuses, or does not answer
            within SERVER_START_TIMEOUT_SECONDS, default 60), the command gives up with exit 69. A port held by
            another program is reported at once; an rclone left by a start-server killed with SIGKILL is stopped
            and replaced. SIGTERM or SIGINT stops it within STOP_GRACE_SECONDS.

            One server per state directory: it records its port, destination and rclone's PID in
            CLOUD_BACKUP_STATE_DIR (server.json, under the lock server.lock), and jobs use the server only when
            that record proves it is this one, ready, serving their destination, in their network namespace.

            With RESTIC_REST_USERNAME and RESTIC_REST_PASSWORD set, it listens on all interfaces at
            RESTIC_REST_PORT (default 8080) and requires them; without, it listens on 127.0.0.1 only.
            RESTIC_REST_APPEND_ONLY=true refuses deletions and overwrites (protection against a compromised client).
            Credentials are passed to rclone through its environment, never on its command line.

            Jobs started in the same container or machine (`backup`, `forget`, `check`, `restic`) use this
            server; anything else answering on the port is never used.

            Built-in schedule (instead of ofelia or cron; `cloud-backup schedule` shows the next runs): set
            BACKUP_SCHEDULE, FORGET_SCHEDULE, CHECK_SCHEDULE, DRILL_SCHEDULE, TOKEN_CHECK_SCHEDULE to cron
            expressions (5 fields "0 2 * * *"; 6 with seconds first as in ofelia-config.ini; @daily, @weekly,
            @hourly…; @every 6h) in the time zone TZ or /etc/localtime. Each run is the job itself
            (`cloud-backup backup $BACKUP_PATHS`, `forget $FORGET_ARGS`, `check $CHECK_ARGS`, `drill`,
            `check-refresh-token`) as a child process, with its pings, metrics and locks.
            - A job still running at its next time is not started twice (logged, and said in its next start
              ping); backup, forget, check and drill run one at a time, in the order they came due.
            - SCHEDULE_JITTER_SECONDS: every job of this host runs the same delay after its time, derived
              from the host name (RESTIC_HOST or the hostname): a fleet spreads out, each host keeps its time.
            - Missed runs: at start, a job whose time passed since its last successful run (the machine was
              off) runs once, when the server is ready; SCHEDULE_CATCH_UP=false turns this off. The runs are
              recorded in CLOUD_BACKUP_STATE_DIR/schedule.json; `status` shows each job's next run and last result.
            - SIGTERM/SIGINT: running jobs are stopped first (restic removes its lock), then the server.
            An invalid expression is exit 78 at start, naming the variable.
            """,
            arguments: .none,
            setup: .configured([], pingsFailureTo: nil) { _, configuration, context in
                RestServer(configuration: configuration, context: context).run()
            }),
        Command(
            name: "server-status",
            summary: "Exit 0 if this state directory's REST server is ready on 127.0.0.1:RESTIC_REST_PORT.",
            help: """
            Usage: cloud-backup server-status

            Prints one line and exits 0 when this state directory's start-server is ready and its rclone
            answers on 127.0.0.1:RESTIC_REST_PORT (with RESTIC_REST_USERNAME/RESTIC_REST_PASSWORD when set), 1
            otherwise (not running, still starting, or something else on the port). It sends no ping and runs
            no restic, so it suits a container HEALTHCHECK.
            """,
            arguments: .none,
            setup: .configured([], pingsFailureTo: nil) { _, configuration, _ in
                RestServer.reportStatus(configuration: configuration)
            }),
        Command(
            name: "schedule",
            summary: "Show the built-in schedule of start-server: each job's next runs, this host's jitter included.",
            help: """
            Usage: cloud-backup schedule [--next N] [--from TIME] [--json]

            Reads BACKUP_SCHEDULE, FORGET_SCHEDULE, CHECK_SCHEDULE, DRILL_SCHEDULE, TOKEN_CHECK_SCHEDULE,
            SCHEDULE_JITTER_SECONDS, the job arguments (BACKUP_PATHS, FORGET_ARGS, CHECK_ARGS) and TZ exactly as
            start-server does, and prints each job's command and its next N runs (default 3) after TIME (default
            now; e.g. 2026-12-04T02:00:00Z). Nothing is run. --json prints the same as JSON (times as Unix
            seconds). Exit 0, or 78 when a setting is invalid (the message names it).
            """,
            arguments: .options(SchedulePreview.options),
            setup: .standalone { arguments, environment in
                SchedulePreview.run(arguments: arguments, environment: environment)
            }),
        Command(
            name: "backup",
            summary: "Run `restic backup ARGS…`, creating the repository on first use; pings BACKUP_CHECK_URL.",
            help: """
            Usage: cloud-backup backup [restic backup arguments…]

            Example: cloud-backup backup --tag daily /backup/dir1 /backup/dir2

            Runs `restic backup` with your arguments (see `cloud-backup restic backup --help`), with
            --host $RESTIC_HOST when RESTIC_HOST is set. The repository is reached through this state directory's
            REST server when it is provably running and serving this destination, otherwise directly.

            - First run: when restic finds no repository, one job at a time (a lock in CLOUD_BACKUP_STATE_DIR)
              lists the destination; the repository is created (restic init) only if that listing worked and
              shows no file of a repository (config, keys/, data/, index/, snapshots/, locks/); otherwise exit 69
              with what was found. After init the job checks that the repository is the one it created.
            - After restic says "snapshot … saved", the snapshot is read back; if it is not there, exit 1.
            - Locked repository: a lock is removed only when its holder has provably ended (not refreshed for
              30 min, or made by a cloud-backup restic that no longer runs); other locks are waited for up to
              LOCK_WAIT_SECONDS, then exit 75 (busy). A destination that is read-only or full fails at once.
            - SIGTERM/SIGINT: restic gets SIGINT (it removes its lock), then SIGKILL after STOP_GRACE_SECONDS.
            - BACKUP_CHECK_URL: pinged at start and with the exit code at the end, with a summary and the end of the log.
            - Output: on a terminal, restic's own live progress. Otherwise (logs) restic runs with --json and
              a progress line is printed every PROGRESS_INTERVAL_SECONDS (percent, bytes and files done, speed,
              ETA), then restic's usual summary. With your own --json, restic's JSON is passed through untouched.
            - METRICS_DIR: backup.prom gets the run's times, exit code and the snapshot's statistics.

            The exit code is restic's (0 ok, 3 snapshot saved but some files unreadable, other = failure).
            """,
            arguments: .forRestic(ownHelp: true),
            setup: .configured(.repositoryPassword, pingsFailureTo: "BACKUP_CHECK_URL") { arguments, configuration, context in
                ResticJob(kind: .backup, userArguments: arguments, configuration: configuration, context: context).run()
            }),
        Command(
            name: "forget",
            summary: "Run `restic forget ARGS…` (e.g. --keep-within 1m --prune); pings FORGET_CHECK_URL.",
            help: """
            Usage: cloud-backup forget [restic forget arguments…]

            Example: cloud-backup forget --keep-within 1m --prune

            Runs `restic forget` with your arguments, with --host $RESTIC_HOST when RESTIC_HOST is set (only this
            machine's snapshots are considered). Locks, signals and exit codes as for `backup`; pings FORGET_CHECK_URL.
            It never creates a repository.
            """,
            arguments: .forRestic(ownHelp: true),
            setup: .configured(.repositoryPassword, pingsFailureTo: "FORGET_CHECK_URL") { arguments, configuration, context in
                ResticJob(kind: .forget, userArguments: arguments, configuration: configuration, context: context).run()
            }),
        Command(
            name: "check",
            summary: "Run `restic check ARGS…` (e.g. --read-data-subset 5%); pings CHECK_CHECK_URL.",
            help: """
            Usage: cloud-backup check [restic check arguments…]

            Example: cloud-backup check --read-data-subset 5%

            Runs `restic check` with your arguments: verifies the repository's structure and, with
            --read-data or --read-data-subset, that the data can be read back. restic takes an exclusive lock:
            locks, signals and exit codes as for `backup`. Pings CHECK_CHECK_URL. Never creates a repository.
            """,
            arguments: .forRestic(ownHelp: true),
            setup: .configured(.repositoryPassword, pingsFailureTo: "CHECK_CHECK_URL") { arguments, configuration, context in
                ResticJob(kind: .check, userArguments: arguments, configuration: configuration, context: context).run()
            }),
        Command(
            name: "drill",
            summary: "Restore DRILL_FILES files of the latest snapshot, compare them with the live ones; pings DRILL_CHECK_URL.",
            help: """
            Usage: cloud-backup drill

            A monitored restore drill: proves that this host's latest snapshot gives back the right bytes.
            - Chooses DRILL_FILES files (default 20) of the snapshot: a quarter the most recently changed, the
              rest spread over the backed-up paths and their top-level directories, rotating from day to day
              (seeded by the date) so that over weeks every file gets its turn.
            - Restores them with `restic restore --verify` into a private temporary directory (mode 0700, in
              CLOUD_BACKUP_STATE_DIR, or TMPDIR when the state directory is inside a backed-up path; never into
              the live files), removed at the end, also on SIGTERM/SIGINT.
            - Compares each with the live file by SHA-256 when the live file's size and modification time are
              still those recorded in the snapshot; a file changed or deleted since is skipped, not failed.
            - Fails (exit 1), naming the files, on any restore error or byte mismatch; fails when the snapshot
              is older than SNAPSHOT_MAX_AGE_HOURS (default 48), holds no file, or lacks a path of DRILL_PATHS
              (or holds it as an empty directory: an unmounted volume).
            - restic takes only its shared (reader) lock; an exclusive one (check, prune) is waited for up to
              LOCK_WAIT_SECONDS, then exit 75. Locks, signals and exit codes otherwise as for `backup`.
            - DRILL_CHECK_URL: pinged at start and with the exit code at the end, the body saying what was
              proven, e.g. "drill finished: 20 files restored, 17 byte-identical to the live files (3 skipped:
              changed since the snapshot), 412 MiB read back, snapshot 1a2b3c4d of 5 h ago; …".
            - METRICS_DIR: drill.prom gets the run's times and cloud_backup_last_drill_* (files by result,
              bytes restored, the snapshot's time and age).
            """,
            arguments: .none,
            setup: .configured(.repositoryPassword, pingsFailureTo: "DRILL_CHECK_URL") { _, configuration, context in
                DrillJob(configuration: configuration, context: context).run()
            }),
        Command(
            name: "restore",
            summary: "Restore a snapshot (default: this host's latest) into an empty directory, and say how to compare it.",
            help: """
            Usage: cloud-backup restore [SNAPSHOT] --target DIR [--include PATH]… [--overwrite]

            Examples: cloud-backup restore --target /srv/restore
                      cloud-backup restore 1a2b3c4d --target /srv/restore --include /backup/dir1/report.odt

            Restores SNAPSHOT (an ID from `cloud-backup restic snapshots`; default, or `latest`: this host's
            latest, RESTIC_HOST or the hostname) with `restic restore --verify`, through the REST server when it
            is provably this state directory's, otherwise directly. Files land under DIR at their original path
            (/backup/dir1/a → DIR/backup/dir1/a). --include (repeatable) restores only what matches (restic's
            pattern: a path, or * and ?). restic takes its shared lock; an exclusive one is waited for
            (LOCK_WAIT_SECONDS).
            - A DIR that exists and is not empty is refused (exit 73): add --overwrite to restore into it anyway
              (the snapshot's files replace those of the same name; nothing is ever deleted).
            - At the end it prints the files and bytes restored and the time taken, and `diff -r` commands to
              compare the restored copy with the originals.
            - Run as root it keeps owners, groups and modes; as another user it keeps modes and says that the
              owners were not kept.

            Docker: mount a directory for the restore. As the image's user (the host directory owned by uid 1000):
              docker compose run --rm -v /srv/restore:/restore cloud-backup restore --target /restore
            As root, keeping owners (a directory mounted at /restore in the running container; HOME names the
            user's settings, and restic then runs without a cache so that root leaves nothing in that home):
              docker exec --user root --env HOME=/home/user cloud-backup cloud-backup restore --target /restore
            A VM, as root with your environment (same state directory, repository and password):
              sudo --preserve-env cloud-backup restore --target /srv/restore

            Exit codes: 0 restored; restic's own on failure (1); 64 usage; 73 target refused; 75 busy.
            """,
            arguments: .options(RestoreRequest.options),
            setup: .configured(.repositoryPassword, pingsFailureTo: nil) { arguments, configuration, context in
                let request: RestoreRequest
                do {
                    request = try RestoreRequest.parse(arguments, currentDirectory: FileManager.default.currentDirectoryPath)
                } catch {
                    let failure = CloudBackupError.from(error)
                    context.log.error(failure.description)
                    return failure.exitCode
                }
                return RestoreCommand(request: request, configuration: configuration, context: context).run()
            }),
        Command(
            name: "status",
            summary: "Check every moving part; a ✓/✗ checklist with the fix for each ✗ (exit 0 if all is well).",
            help: """
            Usage: cloud-backup status [--json]

            Checks, each with a bounded timeout, and prints one ✓ or ✗ line per check with the fix under each ✗:
            the environment; restic and rclone (versions); the destination (listed); the repository (exists,
            RESTIC_PASSWORD opens it); the latest snapshot of each host and its age (this host's must be newer
            than SNAPSHOT_MAX_AGE_HOURS, default 48); the REST server; and each check URL's host (DNS and a TCP
            connection only: a request to a ping URL would count as a ping). --json prints the same as JSON.
            Exit 0 only if all is well, 1 otherwise.
            """,
            arguments: .flags(["--json"]),
            setup: .standalone { arguments, environment in
                StatusReport.runCommand(json: arguments.contains("--json"), environment: environment)
            }),
        Command(
            name: "check-refresh-token",
            summary: "Ping OIDC_TOKEN_CHECK_URL with the INFN login's days left; fail under REFRESH_TOKEN_MIN_DAYS.",
            help: """
            Usage: cloud-backup check-refresh-token

            Reads the refresh token from the oidc-agent account and pings OIDC_TOKEN_CHECK_URL: success with
            "N days left (expires …)" while more than REFRESH_TOKEN_MIN_DAYS (default 7) remain; failure, with
            the command to run (`docker compose run --rm cloud-backup reauth`, or `docker-compose run --rm
            cloud-backup reauth`), when fewer remain, when it has
            expired, or when it cannot be read. Exit 0 on success, non-zero on failure.
            """,
            arguments: .none,
            setup: .configured([], pingsFailureTo: "OIDC_TOKEN_CHECK_URL") { _, configuration, context in
                InfnLogin(configuration: configuration, context: context, interactive: Commands.interactive).checkRefreshToken()
            }),
        Command(
            name: "reauth",
            summary: "Renew the INFN Cloud login (device flow again) before it expires.",
            help: """
            Usage: cloud-backup reauth

            Renews the INFN Cloud login (the refresh token lasts 30 days): the device flow again for the
            existing oidc-agent account, then the account is reloaded into the running agent and the new expiry
            printed. Needs a terminal: `docker compose run --rm cloud-backup reauth` (Compose 1.29:
            `docker-compose run --rm cloud-backup reauth`).
            """,
            arguments: .none,
            setup: .configured([], pingsFailureTo: nil) { _, configuration, context in
                InfnLogin(configuration: configuration, context: context, interactive: Commands.interactive).reauthenticate()
            }),
        Command(
            name: "restic",
            summary: "Run restic with the repository and password preset (snapshots, restore, check, …).",
            help: """
            Usage: cloud-backup restic [restic arguments…]

            Examples: cloud-backup restic snapshots
                      cloud-backup restic restore latest --target /tmp/restore

            Runs restic with RESTIC_REPOSITORY set to the REST server (when one answers) or the destination, and
            the password from RESTIC_PASSWORD. Input, output and exit code are restic's own.
            `cloud-backup restic --help` shows restic's help.
            """,
            arguments: .forRestic(ownHelp: false),
            setup: .configured(.repositoryPassword, pingsFailureTo: nil) { arguments, configuration, context in
                ResticPassthrough(arguments: arguments, configuration: configuration, context: context).run()
            }),
        Command(
            name: "aws-credential-process",
            summary: "The AWS credential_process of the infncloud remote (run by rclone, not by people).",
            help: """
            Usage: cloud-backup aws-credential-process   (run by rclone, not by people)

            The AWS credential_process of the infncloud remote: asks oidc-agent (OIDC_SOCK) for an access
            token for OIDC_AUDIENCE, exchanges it at S3_ENDPOINT_URL with STS AssumeRoleWithWebIdentity
            (role STS_ROLE_NAME), and prints the keys as JSON, with an expiration CREDENTIAL_MARGIN_SECONDS early.
            """,
            arguments: .none, hidden: true,
            setup: .standalone { _, environment in
                CredentialProcess.run(environment: environment)
            }),
        Command(
            name: IsolatedExchange.commandName,
            summary: "One HTTP request for the tool itself (run by cloud-backup, not by people).",
            help: """
            Usage: cloud-backup http-exchange /dev/fd/N   (run by cloud-backup, not by people)

            Makes one HTTP request (a Healthchecks ping, the STS call, the identity provider probe) read as
            JSON from descriptor N, and prints the answer as JSON: URLSession runs in this child process so
            that a fatal error inside it cannot end the job that asked.
            """,
            arguments: .forRestic(ownHelp: true), hidden: true,
            setup: .standalone { arguments, _ in
                IsolatedExchange.serve(arguments: arguments)
            }),
    ]

    public static func named(_ name: String) -> Command? {
        all.first { $0.name == name }
    }

    /// Whether a person can read a login address and answer (a terminal on stdin or stdout).
    static var interactive: Bool { isatty(STDIN_FILENO) == 1 || isatty(STDOUT_FILENO) == 1 }
}
