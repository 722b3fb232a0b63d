import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// oidc-agent command lines (4.2.6), built by pure functions. The account password never appears:
/// it travels in the OIDC_PASSWORD variable named by `--pw-env`.
public enum OidcCommand {
    public static let passwordVariable = "OIDC_PASSWORD"

    /// `--no-autoreauthenticate`: after an invalid_grant oidc-agent 4.2.6 would otherwise fork its own
    /// device-flow poller and block every later oidc-token for the device code's lifetime; we report
    /// and tell the user to run `reauth` instead. `--no-autoload`: it must never prompt.
    public static func startAgent(socket: String) -> [String] { ["--json", "-a", socket, "--no-autoreauthenticate", "--no-autoload"] }
    public static let status = ["--status", "--json"]
    public static func load(_ account: String) -> [String] { [account, "--pw-env=\(passwordVariable)"] }
    public static func unload(_ account: String) -> [String] { ["-r", account] }
    public static func accessToken(_ account: String, audience: String) -> [String] { [account, "--aud=\(audience)"] }
    public static func printAccount(_ account: String) -> [String] { ["-p", account, "--pw-env=\(passwordVariable)"] }

    /// The device flow, with no prompt and no browser: the user opens the URL oidc-gen prints.
    public static func deviceFlow(account: String, settings: InfnSettings, reauthenticate: Bool) -> [String] {
        var arguments = [account]
        if reauthenticate {
            arguments.append("--reauthenticate")
        } else {
            arguments.append("--iss=\(settings.issuer.absoluteString)")
            arguments.append("--scope=\(settings.scopes)")
            if let clientID = settings.clientID { arguments.append("--client-id=\(clientID)") }
        }
        arguments += ["--flow=device", "--pw-env=\(passwordVariable)", "--confirm-default", "--prompt=none", "--no-url-call"]
        return arguments
    }
}

/// The user's oidc-agent: found through its fixed socket on the state directory (so jobs started later
/// with `docker exec` find it too), started when missing, with the account loaded from its encrypted
/// configuration.
public struct OidcAgent {
    public let settings: InfnSettings
    public let paths: InfnSettings.Paths
    /// The tools' environment (OIDC_SOCK set), without the account password.
    public let environment: [String: String]
    public let runner: any ProcessRunning
    public let log: Logger

    public init(settings: InfnSettings, paths: InfnSettings.Paths, environment: [String: String], runner: any ProcessRunning, log: Logger) {
        self.settings = settings
        self.paths = paths
        self.environment = environment
        self.runner = runner
        self.log = log
    }

    var withPassword: [String: String] {
        environment.merging([OidcCommand.passwordVariable: settings.accountPassword]) { $1 }
    }

    func spec(_ tool: String, _ arguments: [String], password: Bool = false, stdout: OutputMode = .collect(limit: 1 << 20)) -> ProcessSpec {
        ProcessSpec(executable: tool, arguments: arguments, environment: password ? withPassword : environment,
                    standardInput: .null, standardOutput: stdout, standardError: .tail(limit: 16 * 1024))
    }

    /// The accounts the agent behind the socket has loaded, or nil when none answers.
    public func loadedAccounts() -> [String]? {
        guard let result = try? runner.run(spec("oidc-agent", OidcCommand.status), timeout: 10), result.status.isSuccess,
              let object = try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any],
              let accounts = object["loaded_accounts"] as? [String] else { return nil }
        return accounts
    }

    /// Finds the agent on the socket or starts one there. Returns the PID of an agent it started.
    @discardableResult
    public func ensureRunning() throws -> pid_t? {
        if loadedAccounts() != nil { return nil }
        // A socket left by an agent that is gone (a container restart) would make oidc-agent refuse it.
        unlink(paths.agentSocket)
        try FileManager.default.createDirectory(atPath: (paths.agentSocket as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        // oidc-agent daemonises: its output ends when the daemon has detached, so this returns.
        let result = try runner.run(spec("oidc-agent", OidcCommand.startAgent(socket: paths.agentSocket)))
        guard result.status.isSuccess,
              let object = try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any] else {
            throw CloudBackupError.infn("could not start oidc-agent: \(lastLine(result.standardError) ?? "\(result.status)")",
                                        fix: "check that oidc-agent is installed (apt-get install oidc-agent-cli)")
        }
        let pid = (object["dpid"] as? String).flatMap { pid_t($0) } ?? (object["dpid"] as? NSNumber)?.int32Value
        log.info("started oidc-agent (PID \(pid.map(String.init) ?? "?")) on \(paths.agentSocket)")
        return pid
    }

    /// Where oidc-agent keeps account configurations (its own order of precedence).
    public var configurationDirectory: String {
        if let directory = environment["OIDC_CONFIG_DIR"] { return directory }
        let home = environment["HOME"] ?? "/root"
        let modern = "\(home)/.config/oidc-agent"
        if FileManager.default.fileExists(atPath: modern) { return modern }
        let legacy = "\(home)/.oidc-agent"
        return FileManager.default.fileExists(atPath: legacy) ? legacy : modern
    }

    public var accountExists: Bool {
        FileManager.default.fileExists(atPath: "\(configurationDirectory)/\(settings.accountName)")
    }

    /// Loads the account into the agent (oidc-add decrypts it with OIDC_PASSWORD and refreshes once).
    public func ensureLoaded() throws {
        try ensureRunning()
        if loadedAccounts()?.contains(settings.accountName) == true { return }
        guard accountExists else {
            throw CloudBackupError.infn("there is no oidc-agent account \(settings.accountName) yet (looked in \(configurationDirectory))",
                                        fix: "run `cloud-backup config` once, in a terminal (Docker: docker compose run --rm cloud-backup config)")
        }
        guard let result = try runner.run(spec("oidc-add", OidcCommand.load(settings.accountName), password: true), timeout: 60) else {
            throw CloudBackupError.infn("oidc-add did not finish within 60 s (is the identity provider \(settings.issuer.absoluteString) reachable?)",
                                        fix: "check the network path to the identity provider")
        }
        guard result.status.isSuccess else {
            let reason = lastLine(result.standardError) ?? lastLine(result.standardOutput) ?? "\(result.status)"
            if reason.contains("maximum number of tries") {
                throw CloudBackupError.infn("OIDC_PASSWORD does not unlock the oidc-agent account \(settings.accountName)",
                                            fix: "set OIDC_PASSWORD to the password chosen at `cloud-backup config`")
            }
            throw CloudBackupError.infn("could not load the oidc-agent account \(settings.accountName): \(reason)",
                                        fix: "check the identity provider \(settings.issuer.absoluteString); if your login expired, run `cloud-backup reauth`")
        }
        log.info("oidc-agent account \(settings.accountName) loaded")
    }

    /// An access token for the storage's audience.
    public func accessToken() throws -> String {
        guard let result = try runner.run(spec("oidc-token", OidcCommand.accessToken(settings.accountName, audience: settings.audience)), timeout: 60) else {
            throw CloudBackupError.infn("oidc-token did not answer within 60 s", fix: "check the identity provider and the agent")
        }
        let token = result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        guard result.status.isSuccess, !token.isEmpty else {
            let reason = lastLine(result.standardError) ?? "\(result.status)"
            if reason.contains("not loaded") || reason.contains("did not receive any response") || reason.contains("connect") {
                throw CloudBackupError.infn("oidc-agent has no account \(settings.accountName) loaded (\(reason))",
                                            fix: "start the server (`cloud-backup start-server` loads it) or run `cloud-backup config`")
            }
            throw CloudBackupError.infn("oidc-token failed: \(reason)", fix: "if your login expired, run `cloud-backup reauth`")
        }
        return token
    }

    /// The refresh token, read from the encrypted account configuration.
    public func refreshToken() throws -> String {
        guard let result = try runner.run(spec("oidc-gen", OidcCommand.printAccount(settings.accountName), password: true), timeout: 30) else {
            throw CloudBackupError.infn("oidc-gen -p did not finish within 30 s", fix: "check oidc-agent")
        }
        guard result.status.isSuccess else {
            let reason = lastLine(result.standardError) ?? "\(result.status)"
            if reason.contains("maximum number of tries") {
                throw CloudBackupError.infn("OIDC_PASSWORD does not unlock the oidc-agent account \(settings.accountName)",
                                            fix: "set OIDC_PASSWORD to the password chosen at `cloud-backup config`")
            }
            throw CloudBackupError.infn("cannot read the oidc-agent account \(settings.accountName): \(reason)",
                                        fix: "run `cloud-backup config` (Docker: docker compose run --rm cloud-backup config)")
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any],
              let token = object["refresh_token"] as? String, !token.isEmpty else {
            throw CloudBackupError.infn("the oidc-agent account \(settings.accountName) holds no refresh token",
                                        fix: "run `cloud-backup reauth`")
        }
        return token
    }
}

func lastLine(_ text: String) -> String? {
    text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.last { !$0.isEmpty }
}
