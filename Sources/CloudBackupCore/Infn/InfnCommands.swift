import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `aws-credential-process` (hidden): what rclone runs, through the AWS profile, for S3 keys. It reads
/// only its environment (rclone's own), never stdin (with `rclone serve restic --stdio` stdin is the
/// protocol stream), prints the keys as JSON on stdout and any failure as one line on stderr.
public enum CredentialProcess {
    public static func run(environment: [String: String], runner: any ProcessRunning = SystemProcessRunner()) -> Int32 {
        let log = Logger()
        var problems: [String] = []
        guard let settings = ConfigurationLoader.infnSettings(user: environment["AAI_USER"] ?? "", bucket: environment["BACKUP_BUCKET"] ?? "",
                                                              environment: environment.filter { !$0.value.isEmpty }, password: "", problems: &problems),
              problems.isEmpty else {
            log.error("aws-credential-process: \(problems.joined(separator: " "))")
            return ExitCode.configuration
        }
        guard environment["OIDC_SOCK"] != nil else {
            log.error("aws-credential-process: OIDC_SOCK is not set: this command is run by rclone under cloud-backup, which sets it")
            return ExitCode.configuration
        }
        let paths = InfnSettings.Paths(agentSocket: environment["OIDC_SOCK"]!, awsConfig: environment["AWS_CONFIG_FILE"] ?? "", rcloneConfig: "")
        let agent = OidcAgent(settings: settings, paths: paths, environment: environment, runner: runner, log: log)
        do {
            let token = try agent.accessToken()
            let credentials = try StsExchange.request(settings: settings, webIdentityToken: token)
            print(StsExchange.credentialProcessJSON(credentials, marginSeconds: settings.credentialMarginSeconds))
            return ExitCode.success
        } catch let error as CloudBackupError {
            log.error("aws-credential-process: \(error.description)")
            return error.exitCode
        } catch {
            log.error("aws-credential-process: \(error)")
            return ExitCode.software
        }
    }
}

/// `config`, `reauth` and `check-refresh-token`: the INFN Cloud login's life cycle.
public struct InfnLogin {
    public let configuration: Configuration
    public let context: JobContext
    /// Whether a person can read the login URL and answer (a terminal on stdin or stdout).
    public var interactive: Bool

    public init(configuration: Configuration, context: JobContext, interactive: Bool) {
        self.configuration = configuration
        self.context = context
        self.interactive = interactive
    }

    private var log: Logger { context.log }

    private func say(_ text: String) {
        writeStandardError(text + "\n")
    }

    /// `config`: guided and idempotent. Creates the login only when there is none.
    public func configure() -> Int32 {
        do {
            if let settings = configuration.infn {
                let agent = InfnSetup.agent(configuration, context: context)!
                let existing = agent.accountExists
                // Before anything is created: a running agent that holds the account would take any password.
                if existing { try agent.verifyPassword() }
                try InfnSetup.writeFiles(settings: settings, paths: configuration.infnPaths)
                try agent.secureConfigurationDirectory()
                try agent.ensureRunning()
                if existing {
                    say("✓ oidc-agent account \(settings.accountName) exists: no new login needed (`cloud-backup reauth` renews it)")
                    try agent.ensureLoaded()
                    say("✓ account loaded: OIDC_PASSWORD unlocks it")
                } else {
                    try deviceFlow(agent: agent, reauthenticate: false)
                    try agent.ensureLoaded()
                }
                report(refreshTokenOf: agent)
                try verifyStorageLogin(agent: agent, settings: settings)
                try ensureBucketPath(settings: settings)
            }
            try ensureRepository()
            say("""

                Next steps:
                  - start the server: docker compose up -d   (docker-compose 1.29: docker-compose up -d;
                    by hand: cloud-backup start-server)
                  - the scheduled jobs (ofelia-config.ini) back up, forget and check; run one now with
                    docker exec --user user cloud-backup cloud-backup backup /backup
                  - check everything at any time, in the server's container:
                    docker exec --user user cloud-backup cloud-backup status   (by hand: cloud-backup status)
                """)
            return ExitCode.success
        } catch {
            let failure = CloudBackupError.from(error)
            log.error(failure.description)
            return failure.exitCode
        }
    }

    /// `reauth`: a new device flow for the existing account, then the account reloaded into the agent.
    public func reauthenticate() -> Int32 {
        guard configuration.infn != nil, let agent = InfnSetup.agent(configuration, context: context) else {
            log.error("reauth is for INFN Cloud storage (AAI_USER and BACKUP_BUCKET); \(configuration.destination) needs no login")
            return ExitCode.usage
        }
        do {
            guard agent.accountExists else {
                throw CloudBackupError.infn("there is no oidc-agent account \(agent.settings.accountName) to renew", fix: "run `cloud-backup config` first")
            }
            // oidc-gen would ask for the password only after the browser step.
            try agent.verifyPassword()
            try agent.secureConfigurationDirectory()
            try agent.ensureRunning()
            try deviceFlow(agent: agent, reauthenticate: true)
            // The agent still holds the old refresh token: reload the account.
            _ = try? context.runner.run(agent.spec("oidc-add", OidcCommand.unload(agent.settings.accountName)), timeout: 30)
            try agent.ensureLoaded()
            report(refreshTokenOf: agent)
            return ExitCode.success
        } catch {
            let failure = CloudBackupError.from(error)
            log.error(failure.description)
            return failure.exitCode
        }
    }

    /// `check-refresh-token`: pings OIDC_TOKEN_CHECK_URL with the days left; fails a week before expiry.
    public func checkRefreshToken(now: Date = Date()) -> Int32 {
        guard let settings = configuration.infn, let agent = InfnSetup.agent(configuration, context: context) else {
            // The scheduled job stays harmless for destinations without a login, and its check (if
            // one was made) gets its success, or it would stay "new" and never alert.
            let summary = "nothing to check: \(configuration.destination) needs no login (check-refresh-token is for INFN Cloud storage)"
            log.info(summary)
            if let check = Self.tokenCheckURL(environment: context.environment, log: log) {
                context.log.addSecrets([check.absoluteString])
                let monitor = HealthchecksMonitor(check: check, transport: context.transport, secrets: configuration.secrets + [check.absoluteString],
                                                  log: log, requestTimeout: Double(configuration.pingTimeoutSeconds),
                                                  budgetSeconds: configuration.pingBudgetSeconds)
                monitor.start()
                monitor.finish(exitCode: ExitCode.success, summary: summary, output: "")
            }
            return ExitCode.success
        }
        let monitor = HealthchecksMonitor(check: settings.tokenCheckURL, configuration: configuration, context: context)
        monitor.start()
        let renew = "run `docker compose run --rm cloud-backup reauth` (or `docker-compose run --rm cloud-backup reauth`; by hand: cloud-backup reauth) to log in again"
        let (code, summary): (Int32, String)
        do {
            let token = try agent.refreshToken()
            switch RefreshTokenLifetime.of(token) {
            case .never:
                (code, summary) = (ExitCode.success, "the refresh token does not expire")
            case .expires(let date):
                let days = RefreshTokenLifetime.daysLeft(until: date, now: now)
                let left = RefreshTokenLifetime.describe(daysLeft: days)
                let when = "expires \(ISO8601DateFormatter().string(from: date))"
                if date <= now {
                    (code, summary) = (ExitCode.failure, "the refresh token has expired (\(when)): backups to INFN Cloud fail until you \(renew)")
                } else if days < settings.refreshTokenMinimumDays {
                    (code, summary) = (ExitCode.failure, "\(left) left (\(when)), fewer than REFRESH_TOKEN_MIN_DAYS=\(settings.refreshTokenMinimumDays): \(renew)")
                } else {
                    (code, summary) = (ExitCode.success, "\(left) left (\(when))")
                }
            case .unreadable(let reason):
                (code, summary) = (ExitCode.failure, "cannot tell when the refresh token expires: \(reason); to be safe, \(renew)")
            }
        } catch {
            let failure = CloudBackupError.from(error)
            (code, summary) = (failure.exitCode, "cannot read the refresh token: \(failure.description) Then, if needed, \(renew)")
        }
        if code == ExitCode.success { log.info("refresh token: \(summary)") } else { log.error("refresh token: \(summary)") }
        monitor.finish(exitCode: code, summary: summary, output: "")
        return code
    }

    /// OIDC_TOKEN_CHECK_URL (or its _FILE) read from the raw environment: without INFN settings the
    /// configuration does not parse it. A value that is not a ping URL is a warning, not a failure.
    static func tokenCheckURL(environment: [String: String], log: Logger, readFile: FileReader = readFileFromDisk) -> URL? {
        let name = "OIDC_TOKEN_CHECK_URL"
        var text = environment[name].flatMap { $0.isEmpty ? nil : $0 }
        if text == nil, let path = environment["\(name)_FILE"], !path.isEmpty {
            text = (try? readFile(path))?.trimmingCharacters(in: .whitespacesAndNewlines)
            if text?.isEmpty ?? true { log.warning("\(name)_FILE=\(path): cannot read a ping URL from it; no ping sent.") }
        }
        var problems: [String] = []
        let url = ConfigurationLoader.pingURL(name, text.flatMap { $0.isEmpty ? nil : $0 }, problems: &problems)
        for problem in problems { log.warning("\(problem) No ping sent.") }
        return url
    }

    private func report(refreshTokenOf agent: OidcAgent) {
        guard let token = try? agent.refreshToken() else { return }
        switch RefreshTokenLifetime.of(token) {
        case .expires(let date):
            let left = RefreshTokenLifetime.describe(daysLeft: RefreshTokenLifetime.daysLeft(until: date))
            say("✓ login valid until \(ISO8601DateFormatter().string(from: date)) (\(left)); `cloud-backup reauth` renews it")
        case .never:
            say("✓ login does not expire")
        case .unreadable(let reason):
            say("? login expiry unknown: \(reason)")
        }
    }

    /// Runs oidc-gen's device flow and shows the address and code prominently.
    private func deviceFlow(agent: OidcAgent, reauthenticate: Bool) throws {
        guard interactive else {
            throw CloudBackupError.infn("logging in to INFN Cloud needs you to open an address and type a code, and this command has no terminal",
                                        fix: "run it in a terminal: docker compose run --rm cloud-backup \(reauthenticate ? "reauth" : "config") (or docker-compose run --rm cloud-backup \(reauthenticate ? "reauth" : "config"); without -T)")
        }
        say("Logging in to INFN Cloud (\(agent.settings.issuer.absoluteString)) for account \(agent.settings.accountName)…")
        let banner = DeviceFlowBanner()
        let observer = LineObserver { line in banner.take(line) }
        var environment = agent.withPassword
        if let secret = agent.settings.clientSecret { environment["OIDC_CLIENT_SECRET"] = secret }
        let spec = ProcessSpec(executable: "oidc-gen", arguments: OidcCommand.deviceFlow(account: agent.settings.accountName, settings: agent.settings,
                                                                                         reauthenticate: reauthenticate),
                               environment: environment, standardInput: .null, standardOutput: .observe(observer), standardError: .observe(observer))
        let result = try runInterruptibly(spec, runner: context.runner, signals: context.signals, graceSeconds: 5, log: log)
        guard result.status.isSuccess else {
            throw CloudBackupError.infn("the login did not complete (oidc-gen: \(banner.lastMessage ?? "\(result.status)"))",
                                        fix: "run the command again and approve the code in the browser before it expires")
        }
        say("✓ logged in")
    }

    /// The chain's last link before rclone: an access token for the storage's audience, exchanged at
    /// the storage's STS for keys, as the credential process does. A failure here is the login's
    /// own message (exit 77), not a listing error from inside rclone.
    private func verifyStorageLogin(agent: OidcAgent, settings: InfnSettings) throws {
        _ = try StsExchange.request(settings: settings, webIdentityToken: try agent.accessToken())
        say("✓ storage login: \(settings.s3Endpoint.absoluteString) gives keys for role \(settings.roleName) (audience \(settings.audience))")
    }

    /// The bucket path exists (created when missing) and can be listed.
    private func ensureBucketPath(settings: InfnSettings) throws {
        let path = configuration.destination.rclonePath
        switch DestinationInspector.inspect(configuration.destination, runner: context.runner, environment: configuration.childEnvironment) {
        case .unreadable(let reason):
            throw CloudBackupError.destinationUnreachable(destination: path, reason: reason)
        case .listed(let names, _):
            if names.isEmpty {
                let spec = ProcessSpec(executable: "rclone", arguments: ["mkdir", path], environment: configuration.childEnvironment,
                                       standardOutput: .tail(limit: 4096), standardError: .tail(limit: 8192))
                let result = try context.runner.run(spec)
                guard result.status.isSuccess else {
                    throw CloudBackupError.destinationUnreachable(destination: path, reason: DestinationInspector.rcloneReason(result.standardError) ?? "\(result.status)")
                }
            }
            say("✓ storage reachable: \(path)")
        }
    }

    /// The repository exists, or is created the one safe way (RepositoryCreation), as a first backup would.
    private func ensureRepository() throws {
        let route = RepositoryRoute.direct(configuration.destination)
        let runner = RegisteringRunner(base: context.runner, registry: ResticRunRegistry(stateDirectory: configuration.stateDirectory),
                                       hostName: context.hostName, log: log)
        let path = configuration.destination.rclonePath
        switch RepositoryProbe.run(ResticInvoker(configuration: configuration, runner: runner, route: route)) {
        case .exists:
            say("✓ repository found at \(path); RESTIC_PASSWORD opens it")
        case .missing:
            switch RepositoryCreation(configuration: configuration, context: context, route: route, runner: runner).createIfSafe() {
            case .failure(let error):
                throw error
            case .success(.created(let id)):
                say("✓ repository created at \(path) (id \(id)); keep RESTIC_PASSWORD safe: without it nothing can be restored")
            case .success(.foundExisting):
                say("✓ repository found at \(path) (created by another job meanwhile); RESTIC_PASSWORD opens it")
            }
        case .wrongPassword:
            throw CloudBackupError.configuration(["RESTIC_PASSWORD does not open the repository at \(path): use the password it was created with."])
        case .failed(let outcome):
            throw CloudBackupError.destinationUnreachable(destination: path, reason: outcome.reason)
        }
    }
}

/// Passes oidc-gen's output through and repeats the address and code where nobody can miss them.
final class DeviceFlowBanner: @unchecked Sendable {
    private let lock = NSLock()
    private var address: String?
    private var expectAddress = false
    private(set) var lastMessage: String?

    func take(_ line: Substring) {
        let text = line.trimmingCharacters(in: .whitespaces)
        lock.lock()
        defer { lock.unlock() }
        // oidc-gen also draws a QR code: pass everything through for the terminal.
        writeStandardError(String(line) + "\n")
        if !text.isEmpty && !text.hasPrefix("█") && !text.hasPrefix("▀") && !text.hasPrefix("▄") { lastMessage = text }
        if text.hasSuffix("visit:") {
            expectAddress = true
        } else if expectAddress && !text.isEmpty {
            address = text
            expectAddress = false
        } else if let range = text.range(of: "enter the code:") {
            let code = text[range.upperBound...].trimmingCharacters(in: .whitespaces)
            writeStandardError("""

                ============================================================
                  To log in, open in any browser:  \(address ?? "(see above)")
                  and enter the code:              \(code)
                  Waiting for you to approve it…
                ============================================================

                """)
        }
    }
}
