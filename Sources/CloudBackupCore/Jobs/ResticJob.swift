import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `backup`, `forget` and `check`: restic with the user's arguments, made safe to run unattended — a
/// repository that does not exist yet is created by `backup` (only when that is provably safe), a
/// lock left by a dead job is cleared and a live one waited for, a stop request reaches restic as
/// SIGINT, and the outcome is pinged to Healthchecks and written as Prometheus metrics.
public struct ResticJob {
    public enum Kind: String, Sendable {
        case backup, forget, check

        func arguments(_ user: [String], host: String?) -> [String] {
            switch self {
            case .backup: return ResticCommand.backup(userArguments: user, host: host)
            case .forget: return ResticCommand.forget(userArguments: user, host: host)
            case .check: return ["check"] + user
            }
        }
    }

    /// How restic's standard output reaches the user.
    enum Presentation {
        /// Streamed as restic prints it (forget, check, or a backup where the user asked for `--json`).
        case raw
        /// Our stdout is a terminal: restic draws its own live progress there.
        case terminal
        /// Logs: restic runs with `--json`, turned into periodic progress lines and a readable summary.
        case progressLines
    }

    /// Bytes of each output stream kept in memory for the ping body and the outcome.
    static let outputTailBytes = 64 * 1024

    public let kind: Kind
    public let userArguments: [String]
    public let configuration: Configuration
    public let context: JobContext

    public init(kind: Kind, userArguments: [String], configuration: Configuration, context: JobContext) {
        self.kind = kind
        self.userArguments = userArguments
        self.configuration = configuration
        self.context = context
    }

    private var log: Logger { context.log }

    /// Runs the job and returns the exit code; never throws, so the final ping is always sent.
    public func run() -> Int32 {
        let checkURL: URL?
        switch kind {
        case .backup: checkURL = configuration.backupCheckURL
        case .forget: checkURL = configuration.forgetCheckURL
        case .check: checkURL = configuration.checkCheckURL
        }
        let monitor = HealthchecksMonitor(check: checkURL, configuration: configuration, context: context)
        monitor.start()
        let started = Date()
        let report = execute()
        let seconds = Date().timeIntervalSince(started)
        let summary = "\(report.summary) (\(formatDuration(seconds)))"
        if report.exitCode == 0 {
            log.info("\(kind.rawValue) finished: \(summary)")
        } else {
            log.error("\(kind.rawValue) failed with exit code \(report.exitCode): \(summary)")
        }
        let transcript = (report.notes.map { "cloud-backup: \($0)" } + [report.output]).joined(separator: "\n")
        monitor.finish(exitCode: report.exitCode, summary: summary, output: transcript)
        if let directory = configuration.metricsDirectory {
            let metrics = JobMetrics(job: kind.rawValue, start: started, end: Date(), exitCode: report.exitCode, backup: report.statistics)
            do {
                try metrics.write(to: directory)
            } catch {
                log.warning("could not write metrics to \(directory): \(describe(error)); the job's result is not affected.")
            }
        }
        return report.exitCode
    }

    struct Report {
        var exitCode: Int32
        var summary: String
        var output: String
        var notes: [String]
        var statistics: BackupStatistics? = nil
    }

    var presentation: Presentation {
        guard kind == .backup, !userArguments.contains("--json") else { return .raw }
        return context.stdoutIsTerminal ? .terminal : .progressLines
    }

    private func execute() -> Report {
        var notes: [String] = []
        func note(_ message: String) {
            log.info(message)
            notes.append(message)
        }
        func failure(_ code: Int32, _ summary: String, output: String = "") -> Report {
            Report(exitCode: code, summary: summary, output: output, notes: notes)
        }

        if configuration.resticHost == nil && looksLikeContainerID(context.hostName) {
            log.warning("the hostname \(context.hostName) looks like a container id and RESTIC_HOST is not set: each new container would file its snapshots under another host. Set RESTIC_HOST (or `hostname:` in docker-compose.yaml).")
        }
        guard ExecutableLookup.resolve("restic", environment: configuration.childEnvironment) != nil else {
            let error = CloudBackupError.programNotFound(name: "restic", path: configuration.childEnvironment["PATH"] ?? "")
            log.error(error.description)
            return failure(error.exitCode, "\(kind.rawValue) failed: restic is not installed")
        }

        do {
            try InfnSetup.prepare(configuration, context: context)
        } catch {
            let failure = CloudBackupError.from(error)
            log.error(failure.description)
            return Report(exitCode: failure.exitCode, summary: "\(kind.rawValue) not run: \(failure.description)", output: "", notes: notes)
        }
        let route = RouteFinder.find(configuration: configuration, log: log, deletes: kind == .forget)
        note("\(kind.rawValue) using \(route)")
        let arguments = kind.arguments(userArguments, host: configuration.resticHost)
        let deadline = Date().addingTimeInterval(Double(configuration.lockWaitSeconds))
        var initialized = false
        var lockWaits = 0

        while true {
            let result: ProcessResult
            let statistics: BackupStatistics?
            do {
                (result, statistics) = try runMain(arguments, route: route)
            } catch {
                let error = CloudBackupError.from(error)
                log.error(error.description)
                return failure(error.exitCode, "\(kind.rawValue) failed: \(error.description)")
            }
            let output = result.combinedOutput
            var outcome = ResticOutcome.classify(status: result.status, output: result.standardError)
            var code = result.status.shellExitCode
            // restic 0.17+ may end a run we interrupted with exit 1 ("context canceled") instead of 130:
            // once we asked it to stop, any failure is the interruption.
            if context.signals.stopRequested, outcome != .success, outcome != .incompleteSnapshot {
                outcome = .interrupted
                code = ExitCode.interrupted
            }

            switch outcome {
            case .success, .incompleteSnapshot:
                var summary = successSummary(result.standardOutput)
                if outcome == .incompleteSnapshot {
                    summary += "; WARNING: some files could not be read (restic exit code 3), see the output"
                }
                return Report(exitCode: code, summary: summary, output: output, notes: notes, statistics: statistics)

            case .interrupted:
                return failure(code, "\(kind.rawValue) interrupted: stopped on request, restic released its lock", output: output)

            case .wrongPassword:
                return failure(code, "\(kind.rawValue) failed: wrong password — RESTIC_PASSWORD does not open the repository at \(configuration.destination.rclonePath). Use the password the repository was created with.", output: output)

            case .unreachable(let reason):
                return failure(code, "\(kind.rawValue) failed: the repository could not be reached (\(reason)). Check the destination and the network; nothing was changed.", output: output)

            case .failed(let reason):
                return failure(code, "\(kind.rawValue) failed: \(reason)", output: output)

            case .locked(let holder):
                if context.signals.stopRequested {
                    return failure(code, "\(kind.rawValue) stopped on request while the repository was locked (\(holder))", output: output)
                }
                let remaining = deadline.timeIntervalSinceNow
                if remaining <= 0 {
                    let busy = CloudBackupError.repositoryBusy(waitedSeconds: configuration.lockWaitSeconds, holder: holder)
                    log.error(busy.description)
                    return failure(busy.exitCode, "\(kind.rawValue) not run: repository busy — \(busy.description)", output: output)
                }
                note("the repository is locked (\(holder)); removing stale locks with `restic unlock` and retrying")
                if let unlock = try? runRestic(ResticCommand.unlock, route: route, output: .tail(limit: 4096)), !unlock.status.isSuccess {
                    note("restic unlock failed (\(unlock.status)): \(ResticOutcome.lastMeaningfulLine(in: unlock.standardError) ?? "")")
                }
                let delay = min(remaining, min(5 * pow(2, Double(lockWaits)), 60) * context.backoffScale)
                lockWaits += 1
                if !waitUnlessStopped(delay) {
                    return failure(ExitCode.interrupted, "\(kind.rawValue) stopped on request while waiting for a lock", output: output)
                }

            case .repositoryMissing:
                if initialized || kind != .backup {
                    return failure(code, "\(kind.rawValue) failed: there is no restic repository at \(configuration.destination.rclonePath) (run a backup first: it creates one)", output: output)
                }
                switch Self.safeToInitialize(configuration: configuration, runner: context.runner, log: log, route: route) {
                case .failure(let error):
                    log.error(error.description)
                    return failure(error.exitCode, "\(kind.rawValue) failed: \(error.description)", output: output)
                case .success:
                    break
                }
                note("no repository at \(configuration.destination.rclonePath) yet: creating it with `restic init`")
                let initResult: ProcessResult
                do {
                    // Captured, not streamed: stdout may be the user's JSON stream.
                    initResult = try runRestic(ResticCommand.initialize, route: route, output: .tail(limit: Self.outputTailBytes))
                } catch {
                    let error = CloudBackupError.from(error)
                    return failure(error.exitCode, "\(kind.rawValue) failed: \(error.description)")
                }
                guard initResult.status.isSuccess else {
                    let reason = ResticOutcome.fatalReason(in: initResult.standardError) ?? ResticOutcome.lastMeaningfulLine(in: initResult.standardError) ?? "\(initResult.status)"
                    return failure(initResult.status.shellExitCode, "\(kind.rawValue) failed: restic init failed: \(reason)", output: initResult.combinedOutput)
                }
                if let created = initResult.standardOutput.split(separator: "\n").first(where: { $0.hasPrefix("created restic repository") }) {
                    note(String(created))
                }
                note("repository created; keep RESTIC_PASSWORD safe: without it these backups cannot be restored")
                initialized = true
            }
        }
    }

    private func successSummary(_ standardOutput: String) -> String {
        switch kind {
        case .backup:
            let summary = BackupSummary.parse(standardOutput)
            return summary.isEmpty ? "backup finished" : summary.oneLine
        case .check:
            return "check finished: no errors were found"
        case .forget:
            let removed = standardOutput.split(separator: "\n").filter { $0.hasPrefix("remove ") }.count
            let kept = standardOutput.split(separator: "\n").filter { $0.hasPrefix("keep ") }.count
            return kept + removed > 0 ? "forget finished: \(removed) snapshot group(s) with removals, \(kept) group(s) kept" : "forget finished"
        }
    }

    /// The one rule for creating a repository (backup's auto-init and `config` both follow it): only
    /// where a listing of the destination worked and shows none. Through `rclone serve restic`, a
    /// credential failure looks exactly like a missing repository.
    static func safeToInitialize(configuration: Configuration, runner: any ProcessRunning, log: Logger,
                                 route: RepositoryRoute) -> Result<Void, CloudBackupError> {
        let destination = configuration.destination
        let contents = DestinationInspector.inspect(destination, runner: runner, environment: configuration.childEnvironment)
        switch contents {
        case .unreadable(let reason):
            return .failure(.destinationUnreachable(destination: destination.rclonePath, reason: "\(reason). restic saw no repository there, but the destination could not be listed, so it was not initialised"))
        case .listed where contents.isInterruptedInit:
            return .failure(.unsafeToInitialize(destination: destination.rclonePath,
                                                reason: "it holds key files (keys/) but no config: a `restic init` was interrupted after saving a key. If no backup ever succeeded there, delete the keys/ directory at the destination and run the backup again"))
        case .listed where contents.holdsRepository:
            return .failure(.unsafeToInitialize(destination: destination.rclonePath,
                                                reason: "a repository is there (config or keys/ found) but restic could not open it through \(route). Is the REST server serving another destination, or did its credentials fail?"))
        case .listed(let names, _):
            if !names.isEmpty {
                log.warning("\(destination.rclonePath) is not empty (\(names.count) entries) but holds no repository; creating the repository beside them")
            }
            return .success(())
        }
    }

    /// One run of the job's own restic command, shown as `presentation` says.
    private func runMain(_ arguments: [String], route: RepositoryRoute) throws -> (ProcessResult, BackupStatistics?) {
        let tail = OutputMode.stream(tailLimit: Self.outputTailBytes)
        switch presentation {
        case .raw:
            let result = try runRestic(arguments, route: route, output: tail)
            let statistics = result.standardOutput.split(separator: "\n").lazy.compactMap(BackupStatistics.parse(jsonLine:)).last
            return (result, statistics)
        case .terminal:
            return (try runRestic(arguments, route: route, output: .inherit, errors: tail), nil)
        case .progressLines:
            let reporter = BackupProgressReporter(interval: Double(configuration.progressIntervalSeconds))
            var withJSON = arguments
            withJSON.insert("--json", at: 1)  // right after `backup`, before any `--`
            var result = try runRestic(withJSON, route: route, output: .observe(reporter.standardOutput), errors: .observe(reporter.standardError))
            result.standardOutput = reporter.shownOutput
            result.standardError = reporter.errorOutput
            return (result, reporter.summary)
        }
    }

    private func runRestic(_ arguments: [String], route: RepositoryRoute, output: OutputMode, errors: OutputMode? = nil) throws -> ProcessResult {
        let spec = ProcessSpec(
            executable: "restic",
            arguments: arguments,
            environment: ResticCommand.environment(base: configuration.childEnvironment, route: route),
            standardInput: .null,
            standardOutput: output,
            standardError: errors ?? output)
        return try runInterruptibly(spec, runner: context.runner, signals: context.signals,
                                    graceSeconds: configuration.stopGraceSeconds, log: log)
    }

    /// Sleeps, but returns false at once when a stop was requested.
    private func waitUnlessStopped(_ seconds: Double) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if context.signals.stopRequested { return false }
            context.sleep(min(0.2, max(0, end.timeIntervalSinceNow)))
        }
        return !context.signals.stopRequested
    }
}

func formatDuration(_ seconds: Double) -> String {
    if seconds < 60 { return String(format: "%.1f s", seconds) }
    let total = Int(seconds.rounded())
    return total < 3600 ? "\(total / 60) min \(total % 60) s" : "\(total / 3600) h \(total % 3600 / 60) min"
}

/// Chooses between our REST server (same container) and the destination itself.
public enum RouteFinder {
    /// restic commands that delete repository data, which an append-only server refuses.
    static let deletingCommands: Set<String> = ["forget", "prune", "key", "rebuild-index", "repair", "migrate", "tag"]

    /// `deletes`: the job removes data. With RESTIC_REST_APPEND_ONLY the server is append-only (for
    /// external clients), so such jobs, run on the server's own machine, go to the destination directly.
    public static func find(configuration: Configuration, log: Logger, deletes: Bool = false) -> RepositoryRoute {
        let port = configuration.restPort
        if deletes && configuration.appendOnly {
            log.info("RESTIC_REST_APPEND_ONLY is set, so the REST server refuses deletions: going to the destination directly")
            return .direct(configuration.destination)
        }
        switch RestServerProbe.probe(port: port, credentials: configuration.restCredentials) {
        case .restServer:
            return .restServer(port: port, credentials: configuration.restCredentials)
        case .refusedCredentials:
            log.warning("a server on 127.0.0.1:\(port) refused RESTIC_REST_USERNAME/RESTIC_REST_PASSWORD; going to the destination directly")
        case .otherService(let status):
            log.warning("something that is not a restic REST server answers on 127.0.0.1:\(port) (HTTP \(status)); going to the destination directly")
        case .nothing:
            break
        }
        return .direct(configuration.destination)
    }
}
