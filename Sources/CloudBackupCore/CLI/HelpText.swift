/// The overview (`cloud-backup --help`): the subcommands from `Commands.all`, then every variable and
/// the exit codes. Each subcommand's own help is in its definition (Commands.swift).
public enum HelpText {
    static let usageLine = "Usage: cloud-backup <subcommand> [arguments…]   (cloud-backup --help lists them)"

    public static func text(for topic: String?) -> String? {
        guard let topic, topic != "help" else { return overview }
        return Commands.named(topic)?.help
    }

    /// "  backup [ARGS…]      Run `restic backup ARGS…`, …", aligned.
    static var subcommandList: String {
        let rows = Commands.all.filter { !$0.hidden }.map { command -> (String, String) in
            let arguments: String
            switch command.arguments {
            case .none: arguments = ""
            case .flags(let flags): arguments = " [" + flags.joined(separator: "|") + "]"
            case .forRestic: arguments = " [ARGS…]"
            case .options(let options): arguments = " " + options.synopsis
            }
            return (command.name + arguments, command.summary)
        } + [("help [SUBCOMMAND]", "Show this help, or a subcommand's.")]
        return rows.map { name, summary in
            // A long argument line (restore's) gets the summary on the next line, still aligned.
            name.count > 20 ? "  \(name)\n" + String(repeating: " ", count: 22) + summary
                : "  " + name.padding(toLength: max(20, name.count + 1), withPad: " ", startingAt: 0) + summary
        }.joined(separator: "\n")
    }

    static var overview: String {
        """
        cloud-backup \(cloudBackupVersion) — monitored, encrypted backups with restic to any rclone destination

        Usage: cloud-backup <subcommand> [arguments…]

        Subcommands:
        \(subcommandList)

        Destination (first one set wins):
          BACKUP_REMOTE              An rclone path (remote:bucket/path, a remote rclone's configuration defines;
                                     or on-the-fly :s3,key=value,…:bucket, its keys kept off command lines)
                                     or an absolute local directory.
          AAI_USER + BACKUP_BUCKET   INFN Cloud storage: infncloud:/<AAI_USER>/<BACKUP_BUCKET>.
          (neither)                  A local directory: $CLOUD_BACKUP_STATE_DIR/repository.
          RCLONE_CONFIG              rclone's configuration file (rclone's own variable).

        INFN Cloud login (with AAI_USER + BACKUP_BUCKET):
          OIDC_PASSWORD              Unlocks the oidc-agent account holding your login (chosen at `config`).
          OIDC_TOKEN_CHECK_URL       Healthchecks ping URL of check-refresh-token.
          REFRESH_TOKEN_MIN_DAYS     check-refresh-token fails below this many days left (default 7).
          OIDC_ACCOUNT               oidc-agent account name (default infncloud).
          OIDC_ISSUER_URL, S3_ENDPOINT_URL, STS_ROLE_NAME, OIDC_AUDIENCE, OIDC_SCOPES
                                     INFN's IAM, RGW, role IAMaccess, audience object, scopes (defaults: INFN's).
          OIDC_CLIENT_ID, OIDC_CLIENT_SECRET
                                     A registered client (default: dynamic client registration).
          STS_DURATION_SECONDS       Lifetime asked for the S3 keys (900–43200, default 900).
          CREDENTIAL_MARGIN_SECONDS  Keys are renewed this long before they expire (default 300).

        Repository and REST server:
          RESTIC_PASSWORD            The repository password (or RESTIC_PASSWORD_FILE / RESTIC_PASSWORD_COMMAND);
                                     only restic gets it.
          RESTIC_REST_USERNAME       With RESTIC_REST_PASSWORD: the server requires these and listens on all
          RESTIC_REST_PASSWORD       interfaces. Without them it listens on 127.0.0.1 only.
          RESTIC_REST_PORT           The server's port (default 8080; numbers are plain digits).
          RESTIC_REST_APPEND_ONLY    true: clients cannot delete or overwrite data (default false).
          RESTIC_HOST                The host name recorded in snapshots (default: this machine's hostname).

        Monitoring:
          BACKUP_CHECK_URL, FORGET_CHECK_URL, CHECK_CHECK_URL, DRILL_CHECK_URL
                                     Healthchecks ping URLs of each job (unset = no pings).
          METRICS_DIR                Write <job>.prom there after each job (node_exporter textfile collector).
          SNAPSHOT_MAX_AGE_HOURS     status and drill fail when this host's latest snapshot is older (default 48).
          PROGRESS_INTERVAL_SECONDS  backup's progress line interval when stdout is not a terminal (default 60).

        Restore drill (drill):
          DRILL_FILES                How many files each drill restores and compares (1–1000, default 20).
          DRILL_PATHS                Absolute paths, separated by ':' or spaces, that the latest snapshot must hold,
                                     each with a file in it (default: none; the drill then only requires files).

        Built-in schedule (start-server runs the jobs; `cloud-backup schedule` shows the next runs):
          BACKUP_SCHEDULE, FORGET_SCHEDULE, CHECK_SCHEDULE, DRILL_SCHEDULE, TOKEN_CHECK_SCHEDULE
                                     Cron expressions (5 fields; 6 with seconds first; @daily, @every 6h…);
                                     unset = that job is not scheduled (default: none).
          BACKUP_PATHS               Absolute paths the scheduled backup saves (default /backup in the image).
          FORGET_ARGS                The scheduled forget's arguments (default --keep-within 1m --prune).
          CHECK_ARGS                 The scheduled check's arguments (default --read-data-subset 5%).
          SCHEDULE_JITTER_SECONDS    This host's fixed delay after each time, 0 to N s, from its name (default 0).
          SCHEDULE_CATCH_UP          Run a job once after a start when its time passed meanwhile (default true).
          TZ                         The schedule's time zone (default /etc/localtime; UTC in the image).

        Tuning:
          LOCK_WAIT_SECONDS          How long a job waits for another job's lock (default 900).
          STOP_GRACE_SECONDS         After SIGTERM/SIGINT, how long restic gets to stop cleanly (default 8).
          SERVER_START_TIMEOUT_SECONDS
                                     How long start-server waits for rclone to serve before a failed start (default 60).
          PING_TIMEOUT_SECONDS       Timeout of each Healthchecks request (default 10; a ping, retries included,
                                     never delays a job more than 35 s).
          CLOUD_BACKUP_STATE_DIR     Where the tool keeps its state (default ~/.local/state/cloud-backup).
          CLOUD_BACKUP_CA_FILE       PEM file of a private CA trusted in addition to the system's, by
                                     cloud-backup, rclone, restic and oidc-agent (AWS_CA_BUNDLE is not passed on).

        Any secret above may instead be given as NAME_FILE, a file holding it (Docker secrets).

        Exit codes: restic's own (0 ok, 1 failed, 3 some files unreadable, 10–12 and 130 on restic ≥ 0.17);
        64 usage, 69 a program or the destination unavailable, or restic files at the destination that no
        repository can be created over, 73 state directory not writable, 75 repository busy (locked),
        77 INFN login failed, 78 configuration.
        """
    }
}
