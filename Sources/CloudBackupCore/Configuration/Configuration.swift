import Foundation

/// Where the backups go.
public enum Destination: Sendable, Equatable, CustomStringConvertible {
    /// A plain directory on this machine (or a mounted volume).
    case localDirectory(String, isDefault: Bool)
    /// A path on a named rclone remote, `remote:bucket/path`, defined in rclone.conf or by
    /// `RCLONE_CONFIG_<NAME>_*` variables.
    case rcloneRemote(String)
    /// rclone's on-the-fly remote `:backend,key=value:path`. Its parameters (often keys) reach rclone
    /// through the environment, as a remote of its own name, never on a command line.
    case onTheFlyRemote(OnTheFlyRemote)
    /// INFN Cloud object storage: the user's bucket through the `infncloud` rclone remote.
    case infnCloud(user: String, bucket: String)

    /// The location as rclone names it (rclone reaches local directories too). Never holds a secret:
    /// it goes on rclone's command line and into the server's record.
    public var rclonePath: String {
        switch self {
        case .localDirectory(let path, _): return path
        case .rcloneRemote(let path): return path
        case .onTheFlyRemote(let remote): return remote.rclonePath
        case .infnCloud(let user, let bucket): return "\(InfnDefaults.remoteName):/\(user)/\(bucket)"
        }
    }

    /// The location for messages: `rclonePath`, except that an on-the-fly remote is shown as the
    /// user wrote it (its secret values as `***`), not under the name the tool gives it for rclone.
    public var displayPath: String {
        if case .onTheFlyRemote(let remote) = self { return remote.maskedConnectionString }
        return rclonePath
    }

    /// The repository as restic opens it without our REST server.
    public var directResticRepository: String {
        switch self {
        case .localDirectory(let path, _): return path
        case .rcloneRemote, .onTheFlyRemote, .infnCloud: return "rclone:\(rclonePath)"
        }
    }

    /// For messages: what the user wrote, with the values that look secret shown as `***`.
    public var description: String {
        switch self {
        case .localDirectory(let path, let isDefault): return isDefault ? "\(path) (local directory, the default)" : "\(path) (local directory)"
        case .rcloneRemote(let path): return "\(path) (rclone remote)"
        case .onTheFlyRemote(let remote): return "\(remote.maskedConnectionString) (rclone on-the-fly remote)"
        case .infnCloud(let user, let bucket): return "\(rclonePath) (INFN Cloud, user \(user), bucket \(bucket))"
        }
    }
}

public enum InfnDefaults {
    public static let remoteName = "infncloud"
}

/// Everything the tool reads from its environment, parsed and checked once. Built from a plain
/// dictionary (never from the process environment deep in the code), so tests pass any environment.
/// Loaded by `ConfigurationLoader`; what children get is `ChildEnvironment`'s policy.
public struct Configuration: Sendable {
    public var destination: Destination
    public var stateDirectory: String
    /// How restic gets the repository password. Only restic gets it (`ResticCommand.environment`).
    public var resticPassword: ResticPasswordSource?
    public var restCredentials: RestCredentials?
    public var restPort: Int
    public var appendOnly: Bool
    public var resticHost: String?
    public var backupCheckURL: URL?
    public var forgetCheckURL: URL?
    public var checkCheckURL: URL?
    /// Healthchecks ping URL of `drill`.
    public var drillCheckURL: URL?
    /// node_exporter's textfile collector directory: each job writes `<job>.prom` there.
    public var metricsDirectory: String?
    /// How often `backup` prints a progress line when stdout is not a terminal.
    public var progressIntervalSeconds: Int
    /// `status` reports this host's latest snapshot when it is older.
    public var snapshotMaximumAgeHours: Int
    /// How many files `drill` restores and compares (DRILL_FILES).
    public var drillFiles: Int
    /// Absolute paths this host's latest snapshot must hold, with at least one file each (DRILL_PATHS;
    /// empty: none configured, the drill only requires a snapshot that is not empty).
    public var drillPaths: [String]
    public var lockWaitSeconds: Int
    public var stopGraceSeconds: Int
    /// How long `start-server` waits for rclone to answer before it counts a failed start.
    public var serverStartTimeoutSeconds: Int
    /// Each Healthchecks request's timeout; a ping's retries all fit in `pingBudgetSeconds`.
    public var pingTimeoutSeconds: Int
    public var pingBudgetSeconds: Double { min(35, Double(pingTimeoutSeconds) * 3 + 5) }
    /// The PEM file of CA certificates trusted in addition to the system's store, by every HTTPS client
    /// (CLOUD_BACKUP_CA_FILE, else AWS_CA_BUNDLE); nil: the system's store alone. How each tool gets it:
    /// `CertificateAuthority`.
    public var certificateAuthorityFile: String?
    /// INFN Cloud login (oidc-agent and STS), when the destination is INFN Cloud storage.
    public var infn: InfnSettings?
    public var infnPaths: InfnSettings.Paths
    /// Values that must never appear in a log line or a ping body.
    public var secrets: [String]
    /// What the user should know about how the environment was read (not problems), to log once.
    public var notes: [String] = []
    /// The environment every child (restic, rclone, oidc-agent) starts from: ours, minus the
    /// repository password and the tool's own secrets, plus the on-the-fly remote's definition and the
    /// CA file's variables (`CertificateAuthority.childVariables`).
    public var childEnvironment: [String: String]

    public var localRepositoryIsDefault: Bool {
        if case .localDirectory(_, true) = destination { return true }
        return false
    }
}

public enum ResticPasswordSource: Sendable, Equatable {
    case value(String)
    case file(String)
    case command(String)
}

public struct RestCredentials: Sendable, Equatable {
    public var username: String
    public var password: String
}

/// What a subcommand needs from the configuration, so `start-server` does not demand the
/// repository password and `--help` demands nothing.
public struct ConfigurationNeeds: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    public static let repositoryPassword = ConfigurationNeeds(rawValue: 1)
}
