import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `backup`, `forget` and `check`: restic with the user's arguments, made safe to run unattended — a
/// repository that does not exist yet is created by `backup` (only when that is provably safe, see
/// RepositoryCreation), a lock is removed only when its holder has provably ended and otherwise waited
/// for (RepositoryLocks), a saved snapshot is read back before success is reported, a stop request
/// reaches restic as SIGINT, and the outcome is written as Prometheus metrics and pinged to Healthchecks.
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
        // Metrics first: a slow Healthchecks at `docker stop` must not cost them.
        if let directory = configuration.metricsDirectory {
            let metrics = JobMetrics(job: kind.rawValue, start: started, end: Date(), exitCode: report.exitCode, backup: report.statistics)
            do {
                try metrics.write(to: directory)
            } catch {
                log.warning("could not write metrics to \(directory): \(describe(error)); the job's result is not affected.")
            }
        }
        let transcript = (report.notes.map { "cloud-backup: \($0)" } + [report.output]).joined(separator: "\n")
        monitor.finish(exitCode: report.exitCode, summary: summary, output: transcript)
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
        registry.removeLongEnded()
        let route = RouteFinder.find(configuration: configuration, log: log, deletes: kind == .forget)
        note("\(kind.rawValue) using \(route)")
        let arguments = kind.arguments(userArguments, host: configuration.resticHost)
        let deadline = Date().addingTimeInterval(Double(configuration.lockWaitSeconds))
        let started = Date()
        var initialized = false
        var lockWaits = 0
        var retriesAfterRemoval = 0
        var lastWaitReason = ""

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
                if kind == .backup, let problem = confirmSnapshot(route: route, statistics: statistics, output: result.standardOutput, started: started) {
                    log.error(problem)
                    return failure(ExitCode.failure, "backup failed: \(problem)", output: output)
                }
                if outcome == .incompleteSnapshot {
                    summary += "; WARNING: some files could not be read (restic exit code 3), see the output"
                }
                return Report(exitCode: code, summary: summary, output: output, notes: notes, statistics: statistics)

            case .interrupted:
                if result.status == .signaled(SIGKILL) {
                    return failure(code, "\(kind.rawValue) interrupted: restic did not stop within STOP_GRACE_SECONDS=\(configuration.stopGraceSeconds) s of the stop request and was killed, so its lock may remain in the repository; the next job removes it once it has proven that this restic has ended", output: output)
                }
                return failure(code, "\(kind.rawValue) interrupted: stopped on request, restic released its lock", output: output)

            case .wrongPassword:
                return failure(code, "\(kind.rawValue) failed: \(CloudBackupError.wrongPassword(destination: configuration.destination.rclonePath).description)", output: output)

            case .unreachable(let reason):
                return failure(code, "\(kind.rawValue) failed: the repository could not be reached (\(reason)). Check the destination and the network; nothing was changed.", output: output)

            case .failed(let reason):
                return failure(code, "\(kind.rawValue) failed: \(reason)", output: output)

            case .locked(let holder):
                if context.signals.stopRequested {
                    return failure(code, "\(kind.rawValue) stopped on request while the repository was locked (\(holder))", output: output)
                }
                let invoker = ResticInvoker(configuration: configuration, runner: resticRunner, route: route)
                let sweep = RepositoryLocks.sweep(invoker: invoker, registry: registry, hostName: context.hostName, log: log)
                if !sweep.removed.isEmpty && retriesAfterRemoval < 3 {
                    retriesAfterRemoval += 1
                    note("removed \(sweep.removed.count) stale lock\(sweep.removed.count == 1 ? "" : "s") whose holder has provably ended; retrying")
                    continue
                }
                let waitingFor = sweep.waitingFor.isEmpty ? [sweep.failure ?? holder] : sweep.waitingFor
                let remaining = deadline.timeIntervalSinceNow
                if remaining <= 0 {
                    let busy = CloudBackupError.repositoryBusy(waitedSeconds: configuration.lockWaitSeconds, holder: waitingFor.joined(separator: "; "))
                    log.error(busy.description)
                    return failure(busy.exitCode, "\(kind.rawValue) not run: repository busy — \(busy.description)", output: output)
                }
                let reason = waitingFor.joined(separator: "; ")
                if reason != lastWaitReason {
                    note("the repository is locked: \(reason). Waiting up to \(Int(remaining.rounded())) s (LOCK_WAIT_SECONDS) for it")
                    lastWaitReason = reason
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
                let creation = RepositoryCreation(configuration: configuration, context: context, route: route, runner: resticRunner)
                switch creation.createIfSafe() {
                case .failure(let error):
                    log.error(error.description)
                    return failure(error.exitCode, "\(kind.rawValue) failed: \(error.description)", output: output)
                case .success(.created(let id)):
                    note("repository \(id) created at \(configuration.destination.rclonePath); keep RESTIC_PASSWORD safe: without it these backups cannot be restored")
                case .success(.foundExisting):
                    note("the repository was created by another job meanwhile: backing up into it")
                }
                initialized = true
            }
        }
    }

    /// Restic's "snapshot … saved" is not proof enough: with its destination removed during the
    /// backup, restic 0.14 still says it and exits 0. The snapshot is read back on the same route
    /// (`restic cat snapshot ID`, one small object). nil when it is there.
    private func confirmSnapshot(route: RepositoryRoute, statistics: BackupStatistics?, output: String, started: Date) -> String? {
        if userArguments.contains("--dry-run") || userArguments.contains("-n") { return nil }
        let invoker = ResticInvoker(configuration: configuration, runner: resticRunner, route: route)
        let id = statistics.map(\.snapshotID).flatMap { $0.isEmpty ? nil : $0 } ?? BackupSummary.parse(output).snapshotID
        guard let id else {
            // On a terminal restic's output is not ours to read: look for this run's snapshot instead.
            let host = Self.hostArgument(in: userArguments) ?? configuration.resticHost ?? context.hostName
            guard let listed = try? invoker.run(["snapshots", "--json", "--no-lock", "--latest", "1", "--host", host], timeout: 300),
                  listed.status.isSuccess,
                  let list = try? JSONSerialization.jsonObject(with: Data(listed.standardOutput.utf8)) as? [[String: Any]] else {
                return "restic reported success, but the repository's snapshots could not be listed afterwards to confirm it: the backup is not proven safe. Check the destination (`cloud-backup status`)"
            }
            let recent = list.contains { ($0["time"] as? String).flatMap(parseResticTime).map { $0 >= started.addingTimeInterval(-2) } ?? false }
            return recent ? nil : "restic reported success, but no snapshot of host \(host) from this run is in the repository: the backup is not safe. Was the destination removed, unmounted or emptied during the backup? Check it (`cloud-backup status`)"
        }
        guard let shown = try? invoker.run(["cat", "snapshot", id, "--no-lock"], timeout: 300) else {
            return "restic reported snapshot \(id.prefix(8)) saved, but reading it back did not finish within 300 s: the backup is not proven safe. Check the destination (`cloud-backup status`)"
        }
        if shown.status.isSuccess { return nil }
        let outcome = ResticOutcome.classify(status: shown.status, output: shown.standardError)
        return "restic reported snapshot \(id.prefix(8)) saved, but it cannot be read back from the repository (\(outcome.reason)): the backup is not safe. Was the destination removed, unmounted or emptied during the backup? Check it (`cloud-backup status`) before the next run"
    }

    /// The value of a `--host`/`-H` the user gave restic.
    static func hostArgument(in arguments: [String]) -> String? {
        for (index, argument) in arguments.enumerated() {
            if argument.hasPrefix("--host=") { return String(argument.dropFirst("--host=".count)) }
            if (argument == "--host" || argument == "-H"), index + 1 < arguments.count { return arguments[index + 1] }
            if argument == "--" { break }
        }
        return nil
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

    /// Every restic of the job is registered, so that a lock it leaves can later be proven abandoned.
    private var registry: ResticRunRegistry { ResticRunRegistry(stateDirectory: configuration.stateDirectory) }
    private var resticRunner: any ProcessRunning {
        RegisteringRunner(base: context.runner, registry: registry, hostName: context.hostName, log: log)
    }

    private func runRestic(_ arguments: [String], route: RepositoryRoute, output: OutputMode, errors: OutputMode? = nil) throws -> ProcessResult {
        let spec = ProcessSpec(
            executable: "restic",
            arguments: arguments,
            environment: ResticCommand.environment(base: configuration.childEnvironment, route: route),
            standardInput: .null,
            standardOutput: output,
            standardError: errors ?? output)
        return try runInterruptibly(spec, runner: resticRunner, signals: context.signals,
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
