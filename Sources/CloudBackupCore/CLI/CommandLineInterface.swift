import Foundation
#if canImport(Glibc)
import Glibc
#endif

public let cloudBackupVersion = "0.1.0"

/// Runs one invocation: parse, load the configuration the subcommand needs, run, and map every
/// outcome to an exit code. Nothing below this decides exit codes for usage and configuration errors.
public enum CommandLineInterface {
    public static func main(arguments: [String], environment: [String: String]) -> Int32 {
        let parsed: ParsedCommandLine
        do {
            parsed = try ParsedCommandLine.parse(Array(arguments.dropFirst()))
        } catch let error as CloudBackupError {
            writeStandardError("cloud-backup: error: \(error.description)\n\n\(HelpText.usageLine)\n")
            return error.exitCode
        } catch {
            return ExitCode.software
        }

        switch parsed {
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
        case .run(let name, let commandArguments):
            guard let command = Commands.named(name) else { return ExitCode.software }
            prepareProcess()
            // HTTP requests are made by a child of this binary (HTTPClient.exchange), except in that child.
            if name != IsolatedExchange.commandName, let binary = runningBinary() {
                HTTPClient.isolatedExecutable.withLock { $0 = binary }
            }
            return run(command, arguments: commandArguments, environment: environment)
        }
    }

    /// Loads what the command needs and runs it.
    static func run(_ command: Command, arguments: [String], environment: [String: String]) -> Int32 {
        switch command.setup {
        case .standalone(let body):
            return body(arguments, environment)
        case .configured(let needs, let checkVariable, let body):
            let log = Logger()
            let configuration: Configuration
            do {
                configuration = try ConfigurationLoader.load(environment: environment, needs: needs)
            } catch let error as CloudBackupError {
                log.error(error.description)
                // A configuration error is still a failed run: tell Healthchecks when it can be told.
                if let checkVariable {
                    pingConfigurationFailure(checkVariable: checkVariable, environment: environment, error: error, log: log)
                }
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
            return body(arguments, configuration, context)
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
    /// This process's executable (the kernel's view, whatever argv[0] says).
    static func runningBinary() -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        let path = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // A binary replaced while it runs (an upgrade) reads "… (deleted)": nothing to start then.
        return path.hasSuffix(" (deleted)") ? nil : path
    }

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
    static func pingConfigurationFailure(checkVariable variable: String, environment: [String: String], error: CloudBackupError, log: Logger) {
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
