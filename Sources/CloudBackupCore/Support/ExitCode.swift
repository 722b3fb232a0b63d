/// The tool's own exit codes (sysexits.h), documented in the README. restic's own codes (0, 1, 3,
/// 10, 11, 12, 130) are passed through unchanged when restic decided the outcome.
public enum ExitCode {
    public static let success: Int32 = 0
    /// A job failed for a reason restic or rclone reported.
    public static let failure: Int32 = 1
    /// EX_USAGE: unknown subcommand or option.
    public static let usage: Int32 = 64
    /// EX_UNAVAILABLE: a program (restic, rclone, oidc-agent) is missing, or the destination cannot be reached.
    public static let unavailable: Int32 = 69
    /// EX_SOFTWARE: an internal error (a bug: please report it).
    public static let software: Int32 = 70
    /// EX_OSERR: the system refused something (spawning a process, creating a pipe).
    public static let operatingSystem: Int32 = 71
    /// EX_CANTCREAT: a state file or directory could not be written.
    public static let cannotCreate: Int32 = 73
    /// EX_TEMPFAIL: the repository stayed locked by another job for the whole wait.
    public static let busy: Int32 = 75
    /// EX_NOPERM: the INFN Cloud login failed (oidc-agent account, identity provider, STS).
    public static let noPermission: Int32 = 77
    /// EX_CONFIG: the environment is invalid (every problem is listed).
    public static let configuration: Int32 = 78
    /// Interrupted by SIGINT (as restic).
    public static let interrupted: Int32 = 130
    /// Stopped by SIGTERM (as a shell reports it).
    public static let terminated: Int32 = 143
}
