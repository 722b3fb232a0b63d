import Foundation

/// Where the backups go.
public enum Destination: Sendable, Equatable, CustomStringConvertible {
    /// A plain directory on this machine (or a mounted volume).
    case localDirectory(String, isDefault: Bool)
    /// Any rclone path: `remote:bucket/path`, or an on-the-fly `:s3,…:bucket` remote.
    case rcloneRemote(String)
    /// INFN Cloud object storage: the user's bucket through the `infncloud` rclone remote.
    case infnCloud(user: String, bucket: String)

    /// The location as rclone names it (rclone reaches local directories too).
    public var rclonePath: String {
        switch self {
        case .localDirectory(let path, _): return path
        case .rcloneRemote(let path): return path
        case .infnCloud(let user, let bucket): return "\(InfnDefaults.remoteName):/\(user)/\(bucket)"
        }
    }

    /// The repository as restic opens it without our REST server.
    public var directResticRepository: String {
        switch self {
        case .localDirectory(let path, _): return path
        case .rcloneRemote, .infnCloud: return "rclone:\(rclonePath)"
        }
    }

    public var description: String {
        switch self {
        case .localDirectory(let path, let isDefault): return isDefault ? "\(path) (local directory, the default)" : "\(path) (local directory)"
        case .rcloneRemote(let path): return "\(path) (rclone remote)"
        case .infnCloud(let user, let bucket): return "\(rclonePath) (INFN Cloud, user \(user), bucket \(bucket))"
        }
    }
}

public enum InfnDefaults {
    public static let remoteName = "infncloud"
}

/// Everything the tool reads from its environment, parsed and checked once. Built from a plain
/// dictionary (never from the process environment deep in the code), so tests pass any environment.
public struct Configuration: Sendable {
    public var destination: Destination
    public var stateDirectory: String
    public var resticPassword: ResticPasswordSource?
    public var restCredentials: RestCredentials?
    public var restPort: Int
    public var appendOnly: Bool
    public var resticHost: String?
    public var backupCheckURL: URL?
    public var forgetCheckURL: URL?
    public var checkCheckURL: URL?
    /// node_exporter's textfile collector directory: each job writes `<job>.prom` there.
    public var metricsDirectory: String?
    /// How often `backup` prints a progress line when stdout is not a terminal.
    public var progressIntervalSeconds: Int
    /// `status` reports this host's latest snapshot when it is older.
    public var snapshotMaximumAgeHours: Int
    public var lockWaitSeconds: Int
    public var stopGraceSeconds: Int
    /// How long `start-server` waits for rclone to answer before it counts a failed start.
    public var serverStartTimeoutSeconds: Int
    /// Each Healthchecks request's timeout; a ping's retries all fit in `pingBudgetSeconds`.
    public var pingTimeoutSeconds: Int
    public var pingBudgetSeconds: Double { min(35, Double(pingTimeoutSeconds) * 3 + 5) }
    /// INFN Cloud login (oidc-agent and STS), when the destination is INFN Cloud storage.
    public var infn: InfnSettings?
    public var infnPaths: InfnSettings.Paths
    /// Values that must never appear in a log line or a ping body.
    public var secrets: [String]
    /// The environment the tools get: ours, minus what must not leak into them.
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

/// Reads small files (Docker secrets); injected so tests need no real files for unit cases.
public typealias FileReader = @Sendable (String) throws -> String

public let readFileFromDisk: FileReader = { path in
    try String(contentsOfFile: path, encoding: .utf8)
}

public enum ConfigurationLoader {
    /// Variables that may be given as NAME_FILE (Docker secrets). RESTIC_PASSWORD_FILE is restic's own.
    static let fileBackedSecrets = ["RESTIC_REST_USERNAME", "RESTIC_REST_PASSWORD", "BACKUP_CHECK_URL", "FORGET_CHECK_URL", "CHECK_CHECK_URL",
                                    "OIDC_PASSWORD", "OIDC_TOKEN_CHECK_URL"]

    /// Parses and validates everything, reporting every problem at once.
    public static func load(
        environment rawEnvironment: [String: String],
        needs: ConfigurationNeeds,
        readFile: FileReader = readFileFromDisk
    ) throws -> Configuration {
        var problems: [String] = []
        // Docker's env_file turns `NAME=` into an empty value: treat empty as unset, as a template intends.
        let environment = rawEnvironment.filter { !$0.value.isEmpty }
        var secrets: [String] = []

        func secret(_ name: String) -> String? {
            let fileName = "\(name)_FILE"
            switch (environment[name], environment[fileName]) {
            case (.some, .some):
                problems.append("\(name) and \(fileName) are both set: set only one of them.")
                return nil
            case (.some(let value), nil):
                return value
            case (nil, .some(let path)):
                do {
                    let value = try readFile(path).trimmingCharacters(in: .newlines)
                    if value.isEmpty {
                        problems.append("\(fileName)=\(path): the file is empty; it should hold the value of \(name).")
                        return nil
                    }
                    return value
                } catch {
                    problems.append("\(fileName)=\(path): cannot read the file (\(describe(error))); it should hold the value of \(name).")
                    return nil
                }
            case (nil, nil):
                return nil
            }
        }

        // Repository password: restic's three ways, exactly one.
        var password: ResticPasswordSource?
        let passwordWays = ["RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND"].filter { environment[$0] != nil }
        if passwordWays.count > 1 {
            problems.append("\(passwordWays.joined(separator: " and ")) are all set: set only one way to give the repository password.")
        } else if let value = environment["RESTIC_PASSWORD"] {
            password = .value(value)
            secrets.append(value)
        } else if let path = environment["RESTIC_PASSWORD_FILE"] {
            do {
                let value = try readFile(path).trimmingCharacters(in: .newlines)
                if value.isEmpty {
                    problems.append("RESTIC_PASSWORD_FILE=\(path): the file is empty; it should hold the repository password.")
                } else {
                    password = .file(path)
                    secrets.append(value)
                }
            } catch {
                problems.append("RESTIC_PASSWORD_FILE=\(path): cannot read the file (\(describe(error))).")
            }
        } else if let command = environment["RESTIC_PASSWORD_COMMAND"] {
            password = .command(command)
        } else if needs.contains(.repositoryPassword) {
            problems.append("RESTIC_PASSWORD is not set: set it (or RESTIC_PASSWORD_FILE) to the password that encrypts the repository, and keep a copy somewhere safe: without it the backups cannot be restored.")
        }

        // REST server credentials: both or neither.
        var credentials: RestCredentials?
        let username = secret("RESTIC_REST_USERNAME")
        let restPassword = secret("RESTIC_REST_PASSWORD")
        switch (username, restPassword) {
        case (.some(let user), .some(let pass)):
            if user.contains(":") {
                problems.append("RESTIC_REST_USERNAME must not contain ':' (it separates user and password in HTTP basic authentication).")
            } else {
                credentials = RestCredentials(username: user, password: pass)
                secrets.append(pass)
            }
        case (.some, nil):
            if environment["RESTIC_REST_PASSWORD_FILE"] == nil {
                problems.append("RESTIC_REST_USERNAME is set but RESTIC_REST_PASSWORD is not: set both to require authentication, or neither to serve on loopback only.")
            }
        case (nil, .some):
            if environment["RESTIC_REST_USERNAME_FILE"] == nil {
                problems.append("RESTIC_REST_PASSWORD is set but RESTIC_REST_USERNAME is not: set both to require authentication, or neither to serve on loopback only.")
            }
        case (nil, nil):
            break
        }

        let port = integer("RESTIC_REST_PORT", in: environment, default: 8080, range: 1...65535,
                           meaning: "a TCP port number from 1 to 65535", problems: &problems)
        let appendOnly = boolean("RESTIC_REST_APPEND_ONLY", in: environment, default: false, problems: &problems)
        let lockWait = integer("LOCK_WAIT_SECONDS", in: environment, default: 900, range: 0...86_400,
                               meaning: "a number of seconds from 0 to 86400", problems: &problems)
        let grace = integer("STOP_GRACE_SECONDS", in: environment, default: 8, range: 1...300,
                            meaning: "a number of seconds from 1 to 300", problems: &problems)

        let serverStart = integer("SERVER_START_TIMEOUT_SECONDS", in: environment, default: 60, range: 5...3600,
                                  meaning: "a number of seconds from 5 to 3600", problems: &problems)
        let pingTimeout = integer("PING_TIMEOUT_SECONDS", in: environment, default: 10, range: 1...60,
                                  meaning: "a number of seconds from 1 to 60", problems: &problems)

        let backupURL = pingURL("BACKUP_CHECK_URL", secret("BACKUP_CHECK_URL"), problems: &problems)
        let forgetURL = pingURL("FORGET_CHECK_URL", secret("FORGET_CHECK_URL"), problems: &problems)
        let checkURL = pingURL("CHECK_CHECK_URL", secret("CHECK_CHECK_URL"), problems: &problems)
        secrets += [backupURL, forgetURL, checkURL].compactMap { $0?.absoluteString }
        let progressInterval = integer("PROGRESS_INTERVAL_SECONDS", in: environment, default: 60, range: 1...86_400,
                                       meaning: "a number of seconds from 1 to 86400", problems: &problems)
        let maximumAge = integer("SNAPSHOT_MAX_AGE_HOURS", in: environment, default: 48, range: 1...8760,
                                 meaning: "a number of hours from 1 to 8760", problems: &problems)
        let metricsDirectory = environment["METRICS_DIR"]
        if let metricsDirectory, !metricsDirectory.hasPrefix("/") {
            problems.append("METRICS_DIR=\(metricsDirectory): must be an absolute path (node_exporter's --collector.textfile.directory).")
        }

        if let host = environment["RESTIC_HOST"], host.contains(where: { $0.isWhitespace }) {
            problems.append("RESTIC_HOST=\(host): must not contain spaces (it names this machine in every snapshot).")
        }

        let stateDirectory = environment["CLOUD_BACKUP_STATE_DIR"]
            ?? environment["XDG_STATE_HOME"].map { "\($0)/cloud-backup" }
            ?? "\(environment["HOME"] ?? "/root")/.local/state/cloud-backup"
        if !stateDirectory.hasPrefix("/") {
            problems.append("CLOUD_BACKUP_STATE_DIR=\(stateDirectory): must be an absolute path.")
        }

        let destination = parseDestination(environment, stateDirectory: stateDirectory, problems: &problems)
        let oidcPassword = secret("OIDC_PASSWORD")
        var infn: InfnSettings?
        var infnEnvironment = environment
        if let tokenURL = secret("OIDC_TOKEN_CHECK_URL") { infnEnvironment["OIDC_TOKEN_CHECK_URL"] = tokenURL }
        if case .infnCloud(let user, let bucket)? = destination {
            infn = infnSettings(user: user, bucket: bucket, environment: infnEnvironment, password: oidcPassword, problems: &problems)
            secrets += [oidcPassword, infn?.tokenCheckURL?.absoluteString, infn?.clientSecret].compactMap { $0 }
        }
        let infnPaths = InfnSettings.paths(stateDirectory: stateDirectory, environment: environment)
        if let configPath = environment["RCLONE_CONFIG"], destination.map(needsRcloneConfig) == true,
           !FileManager.default.fileExists(atPath: configPath) {
            problems.append("RCLONE_CONFIG=\(configPath): the file does not exist; point it to the rclone.conf that defines the remote (create one with `rclone config`).")
        }

        if !problems.isEmpty {
            throw CloudBackupError.configuration(problems)
        }

        return Configuration(
            destination: destination!,
            stateDirectory: stateDirectory,
            resticPassword: password,
            restCredentials: credentials,
            restPort: port,
            appendOnly: appendOnly,
            resticHost: environment["RESTIC_HOST"],
            backupCheckURL: backupURL,
            forgetCheckURL: forgetURL,
            checkCheckURL: checkURL,
            metricsDirectory: metricsDirectory,
            progressIntervalSeconds: progressInterval,
            snapshotMaximumAgeHours: maximumAge,
            lockWaitSeconds: lockWait,
            stopGraceSeconds: grace,
            serverStartTimeoutSeconds: serverStart,
            pingTimeoutSeconds: pingTimeout,
            infn: infn,
            infnPaths: infnPaths,
            secrets: secrets.filter { $0.count >= 4 },
            childEnvironment: infn.map { infnChildEnvironment(childEnvironment(from: rawEnvironment), settings: $0, paths: infnPaths) }
                ?? childEnvironment(from: rawEnvironment))
    }

    static func parseDestination(_ environment: [String: String], stateDirectory: String, problems: inout [String]) -> Destination? {
        if let remote = environment["BACKUP_REMOTE"] {
            if remote.hasPrefix("/") {
                return .localDirectory(normalizedDirectory(remote), isDefault: false)
            }
            if let colon = remote.firstIndex(of: ":") {
                let name = remote[..<colon]
                let validName = name.isEmpty  // `:backend,opt=…:path`, rclone's on-the-fly remotes
                    || name.allSatisfy { $0.isLetter || $0.isNumber || "_-. ".contains($0) }
                if validName && !name.contains("/") {
                    return .rcloneRemote(remote)
                }
            }
            problems.append("BACKUP_REMOTE=\(remote): expected an rclone path like `myremote:bucket/path` (a remote defined in rclone.conf) or an absolute local directory like `/srv/backups`.")
            return nil
        }
        let user = environment["AAI_USER"]
        let bucket = environment["BACKUP_BUCKET"]
        switch (user, bucket) {
        case (.some(let user), .some(let bucket)):
            var valid = true
            if user.contains("/") || user.contains(":") {
                problems.append("AAI_USER=\(user): must be your INFN AAI username (no '/' or ':').")
                valid = false
            }
            if bucket.contains(":") || bucket.hasPrefix("/") {
                problems.append("BACKUP_BUCKET=\(bucket): must be a path inside your INFN Cloud bucket, like `backups` (no ':' and no leading '/').")
                valid = false
            }
            return valid ? .infnCloud(user: user, bucket: bucket) : nil
        case (.some, nil):
            problems.append("AAI_USER is set but BACKUP_BUCKET is not: set both for INFN Cloud storage (or BACKUP_REMOTE for any other destination).")
            return nil
        case (nil, .some):
            problems.append("BACKUP_BUCKET is set but AAI_USER is not: set both for INFN Cloud storage (or BACKUP_REMOTE for any other destination).")
            return nil
        case (nil, nil):
            return .localDirectory("\(stateDirectory)/repository", isDefault: true)
        }
    }

    static func needsRcloneConfig(_ destination: Destination) -> Bool {
        if case .rcloneRemote(let path) = destination { return !path.hasPrefix(":") }
        return false
    }

    static func normalizedDirectory(_ path: String) -> String {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        return trimmed
    }

    /// rclone 1.60 fails every S3 call when AWS_CA_BUNDLE is set (docs/design.md#infn-credential-chain), and the tool's own
    /// secret files must not be re-read by children as something else: drop what would mislead them.
    static func childEnvironment(from environment: [String: String]) -> [String: String] {
        var child = environment
        child.removeValue(forKey: "AWS_CA_BUNDLE")
        // Only oidc-agent's own commands get the account password, and explicitly.
        child.removeValue(forKey: "OIDC_PASSWORD")
        for name in fileBackedSecrets { child.removeValue(forKey: "\(name)_FILE") }
        return child
    }

    static func integer(_ name: String, in environment: [String: String], default fallback: Int, range: ClosedRange<Int>,
                        meaning: String, problems: inout [String]) -> Int {
        guard let text = environment[name] else { return fallback }
        guard let value = Int(text.trimmingCharacters(in: .whitespaces)), range.contains(value) else {
            problems.append("\(name)=\(text): expected \(meaning) (default \(fallback)).")
            return fallback
        }
        return value
    }

    static func boolean(_ name: String, in environment: [String: String], default fallback: Bool, problems: inout [String]) -> Bool {
        guard let text = environment[name] else { return fallback }
        switch text.lowercased() {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default:
            problems.append("\(name)=\(text): expected true or false (default \(fallback)).")
            return fallback
        }
    }

    static func pingURL(_ name: String, _ text: String?, problems: inout [String]) -> URL? {
        guard let text else { return nil }
        guard let url = URL(string: text.trimmingCharacters(in: .whitespaces)),
              let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let host = url.host, !host.isEmpty
        else {
            // The URL itself is a secret of sorts (anyone holding it can ping): show only its shape.
            problems.append("\(name): expected an http(s) Healthchecks ping URL like https://hc-ping.com/<uuid> (got a value of \(text.count) characters that is not one).")
            return nil
        }
        return url
    }
}

func describe(_ error: Error) -> String {
    if let error = error as? CocoaError, let underlying = error.userInfo[NSUnderlyingErrorKey] as? NSError,
       underlying.domain == NSPOSIXErrorDomain {
        return String(cString: strerror(Int32(underlying.code)))
    }
    if let error = error as? CocoaError {
        switch error.code {
        case .fileReadNoSuchFile, .fileNoSuchFile: return "no such file"
        case .fileReadNoPermission: return "permission denied"
        default: break
        }
    }
    return "\(error.localizedDescription)"
}
