import Foundation

/// The one error type. Each case renders as what happened and what to do, and carries its exit code.
public enum CloudBackupError: Error, Equatable, CustomStringConvertible {
    case usage(String)
    case configuration([String])
    case programNotFound(name: String, path: String)
    case system(String, Int32)
    case destinationUnreachable(destination: String, reason: String)
    case repositoryBusy(waitedSeconds: Int, holder: String)
    /// restic found no repository, but files of one are at the destination.
    case unsafeToInitialize(destination: String, found: String, advice: String)
    /// `restic init` itself failed.
    case initFailed(destination: String, reason: String)
    /// `restic init` succeeded, but the repository at the destination is not (only) the one it made.
    case initConflict(destination: String, detail: String)
    case wrongPassword(destination: String)
    /// A stop request (SIGTERM/SIGINT) ended the command.
    case interrupted(String)
    case cannotWrite(path: String, reason: String)
    /// `restore` will not write into this target (not empty, not a directory): what and how to proceed.
    case targetRefused(String)
    case serverFailed(String)
    case internalError(String)
    /// INFN Cloud login (oidc-agent, identity provider, STS) failed.
    case infn(String, fix: String)

    /// Any error as ours: a foreign one is a bug (exit 70) reported with its own text.
    public static func from(_ error: Error) -> CloudBackupError {
        error as? CloudBackupError ?? .internalError("\(error)")
    }

    public var exitCode: Int32 {
        switch self {
        case .usage: return ExitCode.usage
        case .configuration: return ExitCode.configuration
        case .programNotFound, .destinationUnreachable: return ExitCode.unavailable
        case .system: return ExitCode.operatingSystem
        case .repositoryBusy: return ExitCode.busy
        case .unsafeToInitialize, .initConflict: return ExitCode.unavailable
        case .initFailed, .wrongPassword: return ExitCode.failure
        case .interrupted: return ExitCode.interrupted
        case .cannotWrite: return ExitCode.cannotCreate
        case .targetRefused: return ExitCode.cannotCreate
        case .serverFailed: return ExitCode.unavailable
        case .internalError: return ExitCode.software
        case .infn: return ExitCode.noPermission
        }
    }

    public var description: String {
        switch self {
        case .usage(let message):
            return message
        case .configuration(let problems):
            let lines = problems.map { "  - \($0)" }.joined(separator: "\n")
            return "the configuration is not valid (\(problems.count) problem\(problems.count == 1 ? "" : "s")):\n\(lines)\n"
                + "Fix the variables above (in .env for Docker Compose) and run the command again; `cloud-backup --help` lists every variable."
        case .programNotFound(let name, let path):
            return "\(name) was not found on PATH (\(path)). Install it (Debian/Ubuntu: apt-get install \(name)) or add its directory to PATH."
        case .system(let what, let code):
            return "\(what) failed: \(String(cString: strerror(code))) (errno \(code))."
        case .destinationUnreachable(let destination, let reason):
            return "cannot reach the backup destination \(destination): \(reason)\n"
                + "Check the destination's credentials and network (try `rclone lsd \(destination)`); the repository was not touched."
        case .repositoryBusy(let waited, let holder):
            return "the repository is still locked after waiting \(waited) s (LOCK_WAIT_SECONDS): \(holder). "
                + "The job runs again at its next scheduled time, and a lock whose holder has ended is removed then. "
                + "Only if you are sure that no restic uses this repository, in any container or machine, remove the locks yourself: "
                + "`cloud-backup restic unlock --remove-all` (plain `restic unlock` also removes live locks of jobs in other containers with the same host name)."
        case .unsafeToInitialize(let destination, let found, let advice):
            return "restic finds no repository at \(destination), but restic files are there (\(found)), so no repository was created: \(advice).\n"
                + "Nothing was initialised or deleted. Look at the destination with `rclone lsjson -R \(shellQuoted(destination))`."
        case .initFailed(let destination, let reason):
            return "restic init failed at \(destination): \(reason)."
        case .initConflict(let destination, let detail):
            return "a repository was created at \(destination), but \(detail): another process created one there at the same moment "
                + "(first backups started together from machines or containers that do not share CLOUD_BACKUP_STATE_DIR?). Nothing was backed up. "
                + "Stop the other jobs, look at the destination (`rclone lsjson -R \(shellQuoted(destination))`): if it holds no backup yet, empty it and run one backup alone; "
                + "cloud-backup deletes nothing by itself."
        case .wrongPassword(let destination):
            return "wrong password — RESTIC_PASSWORD does not open the repository at \(destination). Use the password the repository was created with."
        case .interrupted(let message):
            return message
        case .targetRefused(let message):
            return message
        case .cannotWrite(let path, let reason):
            // Foundation's own texts end with a period already.
            let cause = reason.hasSuffix(".") ? String(reason.dropLast()) : reason
            return "cannot write \(path): \(cause). Check that the directory exists and that this user, uid \(getuid()), may write to it "
                + "(the image runs as uid 1000: a directory mounted into the container must belong to it, e.g. `chown -R 1000:1000 DIR` on the host)."
        case .serverFailed(let message):
            return message
        case .internalError(let message):
            return "internal error: \(message). This is a bug in cloud-backup; please report it with this message."
        case .infn(let message, let fix):
            return "\(message). To fix: \(fix)."
        }
    }
}
