import Foundation

/// The one error type. Each case renders as what happened and what to do, and carries its exit code.
public enum CloudBackupError: Error, Equatable, CustomStringConvertible {
    case usage(String)
    case configuration([String])
    case programNotFound(name: String, path: String)
    case system(String, Int32)
    case destinationUnreachable(destination: String, reason: String)
    case repositoryBusy(waitedSeconds: Int, holder: String)
    case unsafeToInitialize(destination: String, reason: String)
    case cannotWrite(path: String, reason: String)
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
        case .unsafeToInitialize: return ExitCode.failure
        case .cannotWrite: return ExitCode.cannotCreate
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
            return "the repository is still locked by another job after waiting \(waited) s (\(holder)). "
                + "It will be retried at the next scheduled run; if no other job is running, run `cloud-backup restic unlock` "
                + "(it removes stale locks only) or, once sure, `cloud-backup restic unlock --remove-all`."
        case .unsafeToInitialize(let destination, let reason):
            return "restic reports no repository, but it is not safe to create one at \(destination): \(reason)\n"
                + "Nothing was initialised. Check the destination with `rclone lsjson \(destination)`."
        case .cannotWrite(let path, let reason):
            return "cannot write \(path): \(reason). Check that the directory exists and is writable by this user."
        case .serverFailed(let message):
            return message
        case .internalError(let message):
            return "internal error: \(message). This is a bug in cloud-backup; please report it with this message."
        case .infn(let message, let fix):
            return "\(message). To fix: \(fix)."
        }
    }
}
