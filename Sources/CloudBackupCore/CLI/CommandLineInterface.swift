import Foundation
#if canImport(Glibc)
import Glibc
#endif

public let cloudBackupVersion = "0.1.0"

/// The subcommands. Parsing is separate from running, so tests can check the parse alone.
public enum Subcommand: Equatable, Sendable {
    case help(topic: String?)
    case version
    case startServer
    case serverStatus
    case status(json: Bool)
    case backup([String])
    case forget([String])
    case check([String])
    case restic([String])
    case config
    case reauth
    case checkRefreshToken
    case credentialProcess

    public static let names = ["config", "start-server", "server-status", "backup", "forget", "check", "status",
                               "check-refresh-token", "reauth", "restic", "help"]

    /// Reads argv (without the program name).
    public static func parse(_ arguments: [String]) throws -> Subcommand {
        guard let first = arguments.first else { return .help(topic: nil) }
        let rest = Array(arguments.dropFirst())
        let asksHelp = rest.count == 1 && (rest[0] == "--help" || rest[0] == "-h")
        switch first {
        case "-h", "--help", "help":
            return .help(topic: first == "help" ? rest.first : nil)
        case "--version", "version":
            return .version
        case "start-server":
            if asksHelp { return .help(topic: first) }
            if let unexpected = rest.first {
                throw CloudBackupError.usage("start-server takes no arguments (got \(shellQuoted(unexpected))); it is configured by environment variables, see `cloud-backup start-server --help`.")
            }
            return .startServer
        case "server-status":
            if asksHelp { return .help(topic: first) }
            if let unexpected = rest.first {
                throw CloudBackupError.usage("server-status takes no arguments (got \(shellQuoted(unexpected))).")
            }
            return .serverStatus
        case "status":
            if asksHelp { return .help(topic: first) }
            if rest == ["--json"] { return .status(json: true) }
            if let unexpected = rest.first {
                throw CloudBackupError.usage("status takes only --json (got \(shellQuoted(unexpected))).")
            }
            return .status(json: false)
        case "backup":
            return asksHelp ? .help(topic: first) : .backup(rest)
        case "forget":
            return asksHelp ? .help(topic: first) : .forget(rest)
        case "check":
            return asksHelp ? .help(topic: first) : .check(rest)
        case "restic":
            // Everything goes to restic, `--help` included: this is restic with the repository preset.
            return .restic(rest)
        case "config", "reauth", "check-refresh-token", "aws-credential-process":
            if asksHelp { return .help(topic: first) }
            if let unexpected = rest.first {
                throw CloudBackupError.usage("\(first) takes no arguments (got \(shellQuoted(unexpected))); it is configured by environment variables, see `cloud-backup \(first) --help`.")
            }
            switch first {
            case "config": return .config
            case "reauth": return .reauth
            case "check-refresh-token": return .checkRefreshToken
            default: return .credentialProcess
            }
        default:
            let hint = first.hasPrefix("-") ? "" : (suggestion(for: first).map { " Did you mean `\($0)`?" } ?? "")
            throw CloudBackupError.usage("unknown subcommand or option \(shellQuoted(first)).\(hint) Run `cloud-backup --help` for the list.")
        }
    }

    /// The closest subcommand within two typos.
    static func suggestion(for word: String) -> String? {
        names
            .map { ($0, editDistance(word, $0)) }
            .filter { $0.1 <= 2 }
            .min { $0.1 < $1.1 }?.0
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var previous = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...max(b.count, 1) where !b.isEmpty {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}

/// Runs one invocation: parse, load the configuration the subcommand needs, run, and map every
/// outcome to an exit code. Nothing below this decides exit codes for usage and configuration errors.
public enum CommandLineInterface {
    public static func main(arguments: [String], environment: [String: String]) -> Int32 {
        let command: Subcommand
        do {
            command = try Subcommand.parse(Array(arguments.dropFirst()))
        } catch let error as CloudBackupError {
            writeStandardError("cloud-backup: error: \(error.description)\n\n\(HelpText.usageLine)\n")
            return error.exitCode
        } catch {
            return ExitCode.software
        }

        switch command {
        case .help(let topic):
            guard let text = HelpText.text(for: topic) else {
                writeStandardError("cloud-backup: error: no help for \(shellQuoted(topic ?? "")): it is not a subcommand.\n\n\(HelpText.usageLine)\n")
                return ExitCode.usage
            }
            print(text)
            return ExitCode.success
        case .version:
            print("cloud-backup \(cloudBackupVersion)")
            return ExitCode.success
        case .status(let json):
            prepareProcess()
            let log = Logger()
            let report = StatusReport(environment: environment, context: JobContext(environment: environment, log: log))
            let checks = report.run()
            let text = json ? StatusReport.renderJSON(checks) : StatusReport.render(checks)
            print(Redactor.redact(text, secrets: secretValues(in: environment)), terminator: "")
            return checks.allSatisfy(\.ok) ? ExitCode.success : ExitCode.failure
        case .credentialProcess:
            prepareProcess()
            return CredentialProcess.run(environment: environment)
        default:
            break
        }

        prepareProcess()
        let needs: ConfigurationNeeds = [.startServer, .serverStatus, .reauth, .checkRefreshToken].contains(command) ? [] : [.repositoryPassword]
        let log = Logger()
        let configuration: Configuration
        do {
            configuration = try ConfigurationLoader.load(environment: environment, needs: needs)
        } catch let error as CloudBackupError {
            log.error(error.description)
            // A configuration error is still a failed run: tell Healthchecks when it can be told.
            pingConfigurationFailure(command: command, environment: environment, error: error, log: log)
            return error.exitCode
        } catch {
            log.error("\(error)")
            return ExitCode.software
        }
        log.addSecrets(configuration.secrets)

        let signals = SignalMonitor.shared
        signals.install()
        let scale = environment["CLOUD_BACKUP_BACKOFF_SCALE"].flatMap(Double.init) ?? 1
        let context = JobContext(environment: environment, signals: signals, log: log, backoffScale: scale)

        switch command {
        case .startServer:
            return RestServer(configuration: configuration, context: context).run()
        case .serverStatus:
            return RestServer.reportStatus(configuration: configuration)
        case .backup(let arguments):
            return ResticJob(kind: .backup, userArguments: arguments, configuration: configuration, context: context).run()
        case .forget(let arguments):
            return ResticJob(kind: .forget, userArguments: arguments, configuration: configuration, context: context).run()
        case .check(let arguments):
            return ResticJob(kind: .check, userArguments: arguments, configuration: configuration, context: context).run()
        case .restic(let arguments):
            return ResticPassthrough(arguments: arguments, configuration: configuration, context: context).run()
        case .config, .reauth, .checkRefreshToken:
            let login = InfnLogin(configuration: configuration, context: context, interactive: isatty(STDIN_FILENO) == 1 || isatty(STDOUT_FILENO) == 1)
            switch command {
            case .config: return login.configure()
            case .reauth: return login.reauthenticate()
            default: return login.checkRefreshToken()
            }
        case .help, .version, .status, .credentialProcess:
            return ExitCode.software
        }
    }

    /// Process-wide settings every command needs: a closed log reader must not kill us (children get
    /// SIGPIPE back at its default from the runner). Our own lines are written with write(2),
    /// unbuffered, so they interleave with the children's in logs.
    /// Dispositions and the mask survive exec, so whatever our parent set is undone here:
    /// - SIGCHLD ignored (SIG_IGN or SA_NOCLDWAIT) makes the kernel reap our children itself, and
    ///   their exit status is lost: back to the default;
    /// - a blocked SIGINT/SIGTERM/SIGHUP would never reach the signal monitor (SIGCHLD is unblocked
    ///   with them). Called on the main thread before the tool starts threads of its own, so they
    ///   inherit the cleared mask.
    static func prepareProcess() {
        signal(SIGPIPE, SIG_IGN)
        var standard = sigaction()
        standard.__sigaction_handler.sa_handler = SIG_DFL
        sigemptyset(&standard.sa_mask)
        standard.sa_flags = 0
        sigaction(SIGCHLD, &standard, nil)
        var unblock = sigset_t()
        sigemptyset(&unblock)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGCHLD] { sigaddset(&unblock, signal) }
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    }

    /// The secrets of a raw environment, for output made before (or without) a valid configuration:
    /// the same list a valid configuration adds to its own (`ConfigurationLoader.secretValues`).
    static func secretValues(in environment: [String: String]) -> [String] {
        ConfigurationLoader.secretValues(in: environment)
    }

    /// A configuration error is still a failed run: the check URL is taken as the loader would take it
    /// (the variable, else its `_FILE`), and it and every other known secret are kept out of the body.
    static func pingConfigurationFailure(command: Subcommand, environment: [String: String], error: CloudBackupError, log: Logger) {
        let variable: String
        switch command {
        case .backup: variable = "BACKUP_CHECK_URL"
        case .forget: variable = "FORGET_CHECK_URL"
        case .check: variable = "CHECK_CHECK_URL"
        case .checkRefreshToken: variable = "OIDC_TOKEN_CHECK_URL"
        default: return
        }
        var text = environment[variable].flatMap { $0.isEmpty ? nil : $0 }
        if text == nil, let path = environment["\(variable)_FILE"], !path.isEmpty,
           case .success(let value) = ConfigurationLoader.secretFromFile(variable: "\(variable)_FILE", path: path, holds: variable, readFile: readFileFromDisk) {
            text = value
        }
        guard let text, let url = URL(string: text.trimmingCharacters(in: .whitespaces)),
              let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https", url.host != nil else { return }
        let secrets = [text, url.absoluteString] + secretValues(in: environment)
        let monitor = HealthchecksMonitor(check: url, secrets: secrets, log: log)
        monitor.finish(exitCode: error.exitCode, summary: "not run: \(error.description)", output: "")
    }
}

func writeStandardError(_ text: String) {
    var copy = text
    copy.withUTF8 { writeFully(STDERR_FILENO, $0.baseAddress!, $0.count) }
}

func writeStandardOutput(_ text: String) {
    var copy = text
    copy.withUTF8 { writeFully(STDOUT_FILENO, $0.baseAddress!, $0.count) }
}
