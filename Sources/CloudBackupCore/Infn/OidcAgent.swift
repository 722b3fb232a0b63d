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
            // The CA bundle the account verifies the identity provider with (its `cert_path`; without
            // it oidc-gen takes the system's). `--reauthenticate` keeps the account's own, whatever is
            // given: OidcAgent.alignCertificatePath changes it.
            if let caFile = settings.certificateAuthorityFile { arguments.append("--cert-path=\(caFile)") }
        }
        arguments += ["--flow=device", "--pw-env=\(passwordVariable)", "--confirm-default", "--prompt=none", "--no-url-call"]
        return arguments
    }

    /// The account made again from itself with another CA bundle: `--file` is its own decrypted
    /// configuration (read from descriptor `descriptor`, a pipe), `--flow=refresh` uses the refresh token
    /// in it (no browser; one refresh request, made with the new bundle), `--confirm-yes` replaces the
    /// stored account. oidc-gen 4.2.6 changes nothing when the request fails.
    public static func replaceCertificatePath(_ account: String, configurationDescriptor descriptor: Int32, certificatePath: String) -> [String] {
        [account, "--file=/dev/fd/\(descriptor)", "--flow=refresh", "--cert-path=\(certificatePath)", "--pw-env=\(passwordVariable)",
         "--confirm-yes", "--prompt=none", "--no-url-call"]
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
        // Before the socket is trusted with an account: an agent in a directory others can write to
        // may be anybody's.
        let directory = (paths.agentSocket as NSString).deletingLastPathComponent
        try OidcAgent.prepareSocketDirectory(directory, shared: directory == InfnSettings.sharedSocketDirectory)
        if loadedAccounts() != nil {
            tightenSocket()
            return nil
        }
        // A socket left by an agent that is gone (a container restart) would make oidc-agent refuse it.
        unlink(paths.agentSocket)
        // oidc-agent daemonises: its output ends when the daemon has detached, so this returns.
        let result = try runner.run(spec("oidc-agent", OidcCommand.startAgent(socket: paths.agentSocket)))
        guard result.status.isSuccess,
              let object = try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any] else {
            throw CloudBackupError.infn("could not start oidc-agent: \(lastLine(result.standardError) ?? "\(result.status)")",
                                        fix: "check that oidc-agent is installed (apt-get install oidc-agent-cli)")
        }
        // The daemon may still be setting up its socket when the starting process has printed and
        // exited: under load, an oidc-gen run at once got "Could not connect to oidc-agent". Wait
        // until it answers (and its socket exists, to be made private before any account is loaded).
        let deadline = Date().addingTimeInterval(10)
        while loadedAccounts() == nil {
            guard Date() < deadline else {
                throw CloudBackupError.infn("oidc-agent was started but does not answer on \(paths.agentSocket) after 10 s",
                                            fix: "run the command again; if it persists, check that oidc-agent works (oidc-agent --version) and that \(directory) is writable")
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        tightenSocket()
        let pid = (object["dpid"] as? String).flatMap { pid_t($0) } ?? (object["dpid"] as? NSNumber)?.int32Value
        log.info("started oidc-agent (PID \(pid.map(String.init) ?? "?")) on \(paths.agentSocket)")
        return pid
    }

    /// oidc-agent 4.2.6 makes its socket 0777: whoever can reach it gets access tokens for the loaded
    /// account. Only this user may connect (connecting needs write permission on the socket).
    func tightenSocket() {
        var status = stat()
        guard lstat(paths.agentSocket, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK, status.st_uid == getuid(),
              status.st_mode & 0o077 != 0 else { return }
        chmod(paths.agentSocket, 0o600)
    }

    /// The socket's directory, made 0700 when missing. The shared one under /tmp (used when the state
    /// directory's path is too long for a socket) can be made by anyone before us: it is used only
    /// when it is a real directory of ours that nobody else can enter, or another user could replace
    /// the socket and receive our tokens.
    static func prepareSocketDirectory(_ directory: String, shared: Bool) throws {
        guard shared else {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw CloudBackupError.cannotWrite(path: directory, reason: "cannot create the directory for oidc-agent's socket (\(describe(error)))")
            }
            return
        }
        if mkdir(directory, 0o700) == 0 {
            // Whatever the umask took away.
            chmod(directory, 0o700)
            return
        }
        let code = errno
        guard code == EEXIST else {
            throw CloudBackupError.cannotWrite(path: directory, reason: "cannot create the directory for oidc-agent's socket (\(String(cString: strerror(code))))")
        }
        var status = stat()
        guard lstat(directory, &status) == 0 else {
            throw CloudBackupError.cannotWrite(path: directory, reason: "cannot inspect the directory for oidc-agent's socket (\(String(cString: strerror(errno))))")
        }
        if let problem = insecurity(of: status, expectedOwner: getuid()) {
            throw CloudBackupError.infn("refusing to put oidc-agent's socket in \(directory): \(problem), so another user could take the socket's place and receive your tokens",
                                        fix: "remove \(directory) (it holds only oidc-agent sockets) if you made it, or set CLOUD_BACKUP_STATE_DIR to a path shorter than 80 characters so the socket lives in the state directory")
        }
    }

    /// Why a directory that should be ours alone is not, or nil when it is.
    static func insecurity(of status: stat, expectedOwner: uid_t) -> String? {
        if status.st_mode & S_IFMT == S_IFLNK { return "it is a symbolic link" }
        if status.st_mode & S_IFMT != S_IFDIR { return "it is not a directory" }
        if status.st_uid != expectedOwner { return "it belongs to another user (uid \(status.st_uid))" }
        let mode = status.st_mode & 0o777
        if mode & 0o077 != 0 { return "its mode is \(String(mode, radix: 8)) (others may enter it; expected 700)" }
        return nil
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

    /// oidc-gen writes the account (encrypted, but with the client secret's and refresh token's
    /// ciphertext open to offline guessing) and `issuer.config` with the umask, 0644 by default. The
    /// directory is made 0700 before oidc-gen runs and everything in it that is ours is 0600 after,
    /// and at every load (an account written by an older version is repaired).
    public func secureConfigurationDirectory() throws {
        try OidcAgent.securePrivateDirectory(configurationDirectory)
    }

    static func securePrivateDirectory(_ directory: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw CloudBackupError.cannotWrite(path: directory, reason: "cannot create oidc-agent's configuration directory (\(describe(error)))")
        }
        let me = getuid()
        var status = stat()
        if lstat(directory, &status) == 0, status.st_mode & S_IFMT == S_IFDIR, status.st_uid == me, status.st_mode & 0o077 != 0 {
            chmod(directory, 0o700)
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            let path = "\(directory)/\(name)"
            // Never through a symbolic link, never someone else's file.
            guard lstat(path, &status) == 0, status.st_uid == me else { continue }
            switch status.st_mode & S_IFMT {
            case S_IFREG where status.st_mode & 0o077 != 0: chmod(path, 0o600)
            case S_IFDIR where status.st_mode & 0o077 != 0: chmod(path, 0o700)
            default: break
            }
        }
    }

    /// Decrypts the stored account with OIDC_PASSWORD (`oidc-gen -p`: ~0.2 s, no request to the
    /// identity provider) and returns it. The one proof that OIDC_PASSWORD is right: an agent that
    /// already holds the account would accept any password, since nothing needs to be decrypted then.
    public func readAccount() throws -> [String: Any] {
        try decryptedAccount().object
    }

    /// The account as `oidc-gen -p` prints it, and parsed.
    func decryptedAccount() throws -> (text: String, object: [String: Any]) {
        guard accountExists else {
            throw CloudBackupError.infn("there is no oidc-agent account \(settings.accountName) yet (looked in \(configurationDirectory))",
                                        fix: "run `cloud-backup config` once, in a terminal (Docker: docker compose run --rm cloud-backup config, or docker-compose run --rm cloud-backup config)")
        }
        guard let result = try runner.run(spec("oidc-gen", OidcCommand.printAccount(settings.accountName), password: true), timeout: 30) else {
            throw CloudBackupError.infn("oidc-gen -p did not finish within 30 s", fix: "check oidc-agent")
        }
        guard result.status.isSuccess else {
            let reason = oidcMessage(result.standardError) ?? "\(result.status)"
            if reason.contains("maximum number of tries") {
                throw CloudBackupError.infn("OIDC_PASSWORD does not unlock the oidc-agent account \(settings.accountName) (in \(configurationDirectory))",
                                            fix: "set OIDC_PASSWORD to the password chosen at the first `cloud-backup config`; nothing was started or changed")
            }
            throw CloudBackupError.infn("cannot read the oidc-agent account \(settings.accountName): \(reason)",
                                        fix: "run `cloud-backup config` (Docker: docker compose run --rm cloud-backup config, or docker-compose run --rm cloud-backup config)")
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any] else {
            throw CloudBackupError.infn("oidc-gen -p printed no account configuration for \(settings.accountName)", fix: "run `cloud-backup reauth`")
        }
        return (result.standardOutput, object)
    }

    /// What oidc-agent is told to trust, for the tool's own look at the identity provider: the same CAs.
    var trust: TLSTrust { TLSTrust(caFile: settings.certificateAuthorityFile) }

    /// The CA bundle the account should verify the identity provider with, when its own (`current`)
    /// is not that: CLOUD_BACKUP_CA_FILE, or, when it is not set, oidc-gen's own choice among the
    /// system's bundles (an account made with one of them, or with none, already trusts the system's).
    /// libcurl keeps its CA directory (/etc/ssl/certs) beside the account's bundle, so the CA file is
    /// trusted in addition to the system's store, as everywhere else.
    static func wantedCertificatePath(current: String, caFile: String?, exists: (String) -> Bool = { FileManager.default.fileExists(atPath: $0) }) -> String? {
        if let caFile { return current == caFile ? nil : caFile }
        if current.isEmpty || CertificateAuthority.oidcAgentSystemBundles.contains(current) { return nil }
        return CertificateAuthority.oidcAgentSystemBundles.first(where: exists)
    }

    /// oidc-agent verifies the identity provider with the account's `cert_path`, fixed when oidc-gen
    /// made it, and `oidc-gen --reauthenticate` keeps it. So a CLOUD_BACKUP_CA_FILE set (or changed, or
    /// unset) after `config` would never reach oidc-agent: the account is made again from itself with
    /// the wanted bundle (`OidcCommand.replaceCertificatePath`; its configuration reaches oidc-gen
    /// through a pipe, never a file; ~0.5 s, once per change), which also loads it into the agent.
    /// True when it did. A bundle the identity provider's certificate does not verify with changes
    /// nothing and is reported, naming the provider and the setting.
    @discardableResult
    func alignCertificatePath(_ account: (text: String, object: [String: Any])) throws -> Bool {
        let current = account.object["cert_path"] as? String ?? ""
        guard let wanted = Self.wantedCertificatePath(current: current, caFile: settings.certificateAuthorityFile) else { return false }
        // A few kB, written whole before oidc-gen starts: it must fit in the pipe (64 kB on Linux).
        var text = account.text
        guard text.utf8.count < 60_000 else {
            throw CloudBackupError.infn("the oidc-agent account \(settings.accountName) is too large to copy (\(text.utf8.count) bytes)", fix: "run `cloud-backup config` with a new OIDC_ACCOUNT")
        }
        var descriptors: [Int32] = [-1, -1]
        guard systemPipe2(&descriptors, O_CLOEXEC) == 0 else { throw CloudBackupError.system("pipe", errno) }
        defer { close(descriptors[0]) }
        text.withUTF8 { writeFully(descriptors[1], $0.baseAddress!, $0.count) }
        close(descriptors[1])
        var replace = spec("oidc-gen", OidcCommand.replaceCertificatePath(settings.accountName, configurationDescriptor: descriptors[0], certificatePath: wanted),
                           password: true)
        replace.inheritedDescriptors = [descriptors[0]]
        let what = settings.certificateAuthorityFile.map { "\(CertificateAuthority.variable)=\($0)" } ?? "the system's CA store (\(CertificateAuthority.variable) is not set)"
        guard let result = try runner.run(replace, timeout: 60) else {
            throw CloudBackupError.infn("oidc-gen did not finish within 60 s while switching the oidc-agent account \(settings.accountName) to \(what) (is the identity provider \(settings.issuer.absoluteString) reachable?)",
                                        fix: IdentityProvider.fix)
        }
        try secureConfigurationDirectory()
        guard result.status.isSuccess else {
            let reason = oidcMessage(result.standardError) ?? lastLine(result.standardOutput) ?? "\(result.status)"
            let kept = "the account is unchanged (it still uses \(current.isEmpty ? "the system's CA store" : current))"
            if let problem = IdentityProvider.problem(issuer: settings.issuer, trust: trust) {
                throw CloudBackupError.infn("oidc-agent cannot use \(what): \(problem.description); \(kept)", fix: problem.fix)
            }
            throw CloudBackupError.infn("could not switch the oidc-agent account \(settings.accountName) to \(what) (oidc-gen: \(reason)); \(kept)",
                                        fix: "if your login expired, run `cloud-backup reauth`; otherwise check the identity provider \(settings.issuer.absoluteString)")
        }
        log.info("the oidc-agent account \(settings.accountName) now verifies the identity provider with \(what) (it used \(current.isEmpty ? "the system's CA store" : current))")
        return true
    }

    /// Checks that the account exists and that OIDC_PASSWORD unlocks it. Starts and writes nothing.
    public func verifyPassword() throws {
        _ = try readAccount()
    }

    /// Loads the account into the agent (oidc-add decrypts it with OIDC_PASSWORD and refreshes once).
    /// The password is verified first, every time, before the agent is started or anything written.
    public func ensureLoaded() throws {
        let account = try decryptedAccount()
        try secureConfigurationDirectory()
        try ensureRunning()
        // oidc-gen loads the account it makes again.
        if try alignCertificatePath(account) { return }
        if loadedAccounts()?.contains(settings.accountName) == true { return }
        guard let result = try runner.run(spec("oidc-add", OidcCommand.load(settings.accountName), password: true), timeout: 60) else {
            throw CloudBackupError.infn("oidc-add did not finish within 60 s (is the identity provider \(settings.issuer.absoluteString) reachable?)",
                                        fix: "check the network path to the identity provider")
        }
        guard result.status.isSuccess else {
            let reason = oidcMessage(result.standardError) ?? lastLine(result.standardOutput) ?? "\(result.status)"
            if reason.contains("maximum number of tries") {
                throw CloudBackupError.infn("OIDC_PASSWORD does not unlock the oidc-agent account \(settings.accountName)",
                                            fix: "set OIDC_PASSWORD to the password chosen at `cloud-backup config`")
            }
            if let unreachable = IdentityProvider.problem(issuer: settings.issuer, trust: trust) {
                throw CloudBackupError.infn("could not load the oidc-agent account \(settings.accountName): \(unreachable.description)",
                                            fix: unreachable.fix)
            }
            throw CloudBackupError.infn("could not load the oidc-agent account \(settings.accountName): \(reason)",
                                        fix: "check the identity provider \(settings.issuer.absoluteString); if your login expired, run `cloud-backup reauth`")
        }
        log.info("oidc-agent account \(settings.accountName) loaded")
    }

    /// An access token for the storage's audience. Every request with an audience is a refresh request
    /// to the identity provider, so its failures are told apart here: oidc-token 4.2.6 says "the other
    /// party disconnected" both when the agent went away and when the provider cannot be reached.
    public func accessToken() throws -> String {
        guard let result = try runner.run(spec("oidc-token", OidcCommand.accessToken(settings.accountName, audience: settings.audience)), timeout: 60) else {
            if let unreachable = IdentityProvider.problem(issuer: settings.issuer, trust: trust) {
                throw CloudBackupError.infn(unreachable.description, fix: unreachable.fix)
            }
            throw CloudBackupError.infn("oidc-token did not answer within 60 s", fix: "check the identity provider and the agent")
        }
        let token = result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        guard result.status.isSuccess, !token.isEmpty else {
            throw accessTokenFailure(oidcMessage(result.standardError) ?? "\(result.status)")
        }
        return token
    }

    /// What an oidc-token failure means, checked against the agent and the identity provider.
    func accessTokenFailure(_ reason: String) -> CloudBackupError {
        let startIt = "start the server (`cloud-backup start-server` starts it and loads the account) or run `cloud-backup config`"
        if reason.contains("not loaded") {
            return .infn("oidc-agent on \(paths.agentSocket) has no account \(settings.accountName) loaded (oidc-token: \(reason))", fix: startIt)
        }
        guard let loaded = loadedAccounts() else {
            return .infn("oidc-agent does not answer on \(paths.agentSocket) (oidc-token: \(reason))", fix: startIt)
        }
        guard loaded.contains(settings.accountName) else {
            return .infn("oidc-agent on \(paths.agentSocket) has no account \(settings.accountName) loaded (oidc-token: \(reason))", fix: startIt)
        }
        if let unreachable = IdentityProvider.problem(issuer: settings.issuer, trust: trust) {
            return .infn("oidc-agent could not get an access token: \(unreachable.description)", fix: unreachable.fix)
        }
        return .infn("oidc-agent could not get an access token from \(settings.issuer.absoluteString) (oidc-token: \(reason))",
                     fix: "if your login expired or was revoked, run `cloud-backup reauth`")
    }

    /// The refresh token, read from the encrypted account configuration.
    public func refreshToken() throws -> String {
        guard let token = try readAccount()["refresh_token"] as? String, !token.isEmpty else {
            throw CloudBackupError.infn("the oidc-agent account \(settings.accountName) holds no refresh token",
                                        fix: "run `cloud-backup reauth`")
        }
        return token
    }
}

/// Whether the identity provider answers at all: what tells "cannot be reached" (or "its certificate is
/// not trusted") from a refused login. oidc-agent 4.2.6 says neither: an unreachable provider is "the
/// other party disconnected" and an untrusted certificate "Could not get token endpoint from the
/// configuration endpoint … your issuer is not correct".
enum IdentityProvider {
    static let fix = "check the network path to the identity provider (OIDC_ISSUER_URL) and whether it is up; your login is kept, and backups work again once it answers"
    static let certificateFix = "set \(CertificateAuthority.variable) to the PEM file of the CA that signed the identity provider's certificate (OIDC_ISSUER_URL), or add that CA to the system's store; your login is kept"

    struct Problem: Equatable {
        var description: String
        var fix: String
    }

    /// nil when the provider's discovery document answers below HTTP 500; otherwise what went wrong,
    /// naming the provider. The same GET oidc-agent makes first, without a token, trusting the CAs
    /// oidc-agent is given (`trust`).
    static func problem(issuer: URL, trust: TLSTrust, timeout: Double = 5) -> Problem? {
        var text = issuer.absoluteString
        while text.hasSuffix("/") { text.removeLast() }
        guard let discovery = URL(string: text + "/.well-known/openid-configuration") else { return nil }
        do {
            let answer = try HTTPClient.exchange(url: discovery, body: nil, timeout: timeout, answerLimit: 0, trust: trust)
            guard answer.status >= 500 else { return nil }
            return Problem(description: "the identity provider \(issuer.absoluteString) cannot be used: it answers HTTP \(answer.status)", fix: fix)
        } catch let failure as HTTPTransport.Failure where failure.isTLS {
            return Problem(description: "the identity provider \(issuer.absoluteString) cannot be trusted: \(failure.description)", fix: certificateFix)
        } catch {
            return Problem(description: "the identity provider \(issuer.absoluteString) cannot be reached (\(error))", fix: fix)
        }
    }
}

/// oidc-agent's tools print "Error: …" first and advice after it (for invalid_grant, the oidc-gen
/// command to run, which would mislead here: the fix is `cloud-backup reauth`).
func oidcMessage(_ standardError: String) -> String? {
    standardError.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.first { $0.hasPrefix("Error:") }
        ?? lastLine(standardError)
}
