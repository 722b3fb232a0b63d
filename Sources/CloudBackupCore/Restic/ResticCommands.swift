import Foundation

/// How restic reaches the repository for one job.
public enum RepositoryRoute: Sendable, Equatable, CustomStringConvertible {
    /// Through our `rclone serve restic` on loopback.
    case restServer(port: Int, credentials: RestCredentials?)
    /// Straight to the destination (restic's local or `rclone:` backend).
    case direct(Destination)

    /// The value of RESTIC_REPOSITORY. It may hold the REST password, so it travels in the environment,
    /// never in argv (restic itself shows locations with the password stripped).
    public var repositoryURL: String {
        switch self {
        case .restServer(let port, let credentials):
            var userInfo = ""
            if let credentials {
                userInfo = "\(PercentEncoding.userInfo(credentials.username)):\(PercentEncoding.userInfo(credentials.password))@"
            }
            return "rest:http://\(userInfo)127.0.0.1:\(port)/"
        case .direct(let destination):
            return destination.directResticRepository
        }
    }

    public var description: String {
        switch self {
        case .restServer(let port, _): return "the REST server at http://127.0.0.1:\(port)/"
        case .direct(let destination): return "the destination directly (\(destination.directResticRepository))"
        }
    }
}

/// restic command lines, built by pure functions.
public enum ResticCommand {
    /// restic's environment: the children's base plus the repository and exactly the configured
    /// password source. Only restic gets the password (rclone, oidc-agent and the credential process
    /// start from the same base without it); restic keeps RESTIC_* variables from the rclone it starts.
    public static func environment(base: [String: String], route: RepositoryRoute, password: ResticPasswordSource? = nil) -> [String: String] {
        var environment = base
        environment["RESTIC_REPOSITORY"] = route.repositoryURL
        // A repository file given by the user would silently win over RESTIC_REPOSITORY.
        environment.removeValue(forKey: "RESTIC_REPOSITORY_FILE")
        for name in ConfigurationLoader.repositoryPasswordVariables { environment.removeValue(forKey: name) }
        switch password {
        case .value(let value)?: environment["RESTIC_PASSWORD"] = value
        case .file(let path)?: environment["RESTIC_PASSWORD_FILE"] = path
        case .command(let command)?: environment["RESTIC_PASSWORD_COMMAND"] = command
        case nil: break
        }
        return environment
    }

    /// `restic backup …` with RESTIC_HOST applied as `--host` (restic 0.14 does not read the variable;
    /// 0.17+ does, and the flag gives both the same meaning). The user's own `--host` wins.
    public static func backup(userArguments: [String], host: String?) -> [String] {
        ["backup"] + hostArguments(host, unlessIn: userArguments) + userArguments
    }

    /// `restic forget …`. With RESTIC_HOST, only this machine's snapshots are considered, as restic
    /// 0.17+ does by itself with the variable set.
    public static func forget(userArguments: [String], host: String?) -> [String] {
        ["forget"] + hostArguments(host, unlessIn: userArguments) + userArguments
    }

    public static let initialize = ["init"]
    public static let unlock = ["unlock"]
    public static let version = ["version"]

    static func hostArguments(_ host: String?, unlessIn arguments: [String]) -> [String] {
        guard let host else { return [] }
        let givesHost = arguments.contains { $0 == "--host" || $0 == "-H" || $0.hasPrefix("--host=") || ($0.hasPrefix("-H") && $0.count > 2 && !$0.hasPrefix("--")) }
        return givesHost ? [] : ["--host", host]
    }
}

/// What a restic run meant, for restic 0.14–0.16 (codes 0/1/3 and messages) and 0.17+ (more codes).
public enum ResticOutcome: Sendable, Equatable {
    case success
    /// Exit 3: the snapshot was saved, but some source files could not be read.
    case incompleteSnapshot
    case repositoryMissing
    case locked(holder: String)
    case wrongPassword
    /// The repository's location could not be reached (connection refused, DNS, timeout).
    case unreachable(reason: String)
    case interrupted
    case failed(reason: String)

    public static func classify(status: TerminationStatus, output: String) -> ResticOutcome {
        switch status {
        case .signaled(let signal):
            return signal == SIGINT ? .interrupted : .failed(reason: "restic was killed by \(signalName(signal))")
        case .unknown:
            // Not knowing is not success: restic may have failed.
            return .failed(reason: "restic ended, but \(status)")
        case .exited(0):
            return .success
        case .exited(3):
            return .incompleteSnapshot
        case .exited(10):
            return .repositoryMissing
        case .exited(11):
            // 0.17+: "failed to lock repository", which a read-only or full destination gives too.
            return output.contains("already locked") ? .locked(holder: lockHolder(in: output)) : .failed(reason: lockWriteFailure(in: output))
        case .exited(12):
            return .wrongPassword
        case .exited(130):
            return .interrupted
        case .exited:
            break
        }
        // restic 0.14–0.16 say everything with exit 1: read the words.
        if output.contains("wrong password or no key found") {
            return .wrongPassword
        }
        // Only these words mean another process holds the repository. restic prefixes *every* failure
        // to write its lock file with "unable to create lock in backend" (a read-only, full or
        // forbidden destination too): those are failures to report at once, never locks to wait for.
        if output.contains("repository is already locked") {
            return .locked(holder: lockHolder(in: output))
        }
        if output.contains("unable to create lock in backend") {
            return .failed(reason: lockWriteFailure(in: output))
        }
        let unreachableSigns = ["connection refused", "no such host", "i/o timeout", "network is unreachable",
                                "connection reset", "TLS handshake timeout", "context deadline exceeded"]
        if let sign = unreachableSigns.first(where: { output.contains($0) }) {
            return .unreachable(reason: fatalReason(in: output) ?? sign)
        }
        let missingSigns = ["Is there a repository at the following location?", "unable to open config file",
                            "repository does not exist"]
        if missingSigns.contains(where: { output.contains($0) }) {
            return .repositoryMissing
        }
        return .failed(reason: fatalReason(in: output) ?? lastLine(output) ?? "restic failed without a message")
    }

    /// The sentence after `Fatal: `, restic's way of saying why it stopped.
    static func fatalReason(in output: String) -> String? {
        output.split(separator: "\n").last { $0.hasPrefix("Fatal: ") }.map { String($0.dropFirst("Fatal: ".count)) }
    }

    /// Why restic could not write its lock file, as a sentence: the cause is the line before restic's
    /// Go stack trace (`open …/locks/…-tmp-…: read-only file system`), which a reader should not have to dig for.
    static func lockWriteFailure(in output: String) -> String {
        let lines = output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let causes: [(sign: String, meaning: String)] = [
            ("read-only file system", "the destination is read-only (read-only file system)"),
            ("no space left on device", "the destination is full (no space left on device)"),
            ("disk quota exceeded", "the destination is full (disk quota exceeded)"),
            ("permission denied", "the destination refuses writes (permission denied)"),
            ("Insufficient Storage", "the destination is full (HTTP 507 Insufficient Storage)"),
            ("QuotaExceeded", "the destination is full (QuotaExceeded)"),
            ("AccessDenied", "the destination refuses writes (AccessDenied)"),
        ]
        let detail = lines.last { line in
            !line.isEmpty && !line.hasPrefix("github.com/") && !line.hasPrefix("runtime") && !line.hasPrefix("main.")
                && !line.hasPrefix("Save(") && !line.hasPrefix("unable to create lock") && !line.hasPrefix("/")
                && !line.hasPrefix("golang.org/") && !line.hasPrefix("Fatal: unable to create lock")
        }
        let meaning = causes.first { cause in output.localizedCaseInsensitiveContains(cause.sign) }?.meaning
        let base = "restic could not write its lock file to the repository, so nothing was changed"
        switch (meaning, detail) {
        case (let meaning?, _): return "\(meaning): \(base). Free space or make the destination writable, then run the job again"
        case (nil, let detail?): return "\(base) (\(detail)). Check that the destination is writable, then run the job again"
        default: return "\(base). Check that the destination is writable, then run the job again"
        }
    }

    /// "by PID 1234 on host by user" from restic's lock message, for the log.
    static func lockHolder(in output: String) -> String {
        guard let line = output.split(separator: "\n").first(where: { $0.contains("locked") && $0.contains(" by ") }),
              let range = line.range(of: "locked ") else {
            return "another restic process"
        }
        return String(line[range.lowerBound...])
    }
}
