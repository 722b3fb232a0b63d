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

    /// How restic's output reaches the user.
    enum Presentation {
        /// Our stdout is a terminal: restic is the terminal's foreground job (its own progress bar,
        /// per-file errors and summary), its stderr also kept for the outcome. Ctrl-C reaches it
        /// directly; SIGTERM reaches it through us as SIGINT.
        case terminal
        /// Logs, backup: restic runs with `--json`, turned into periodic progress lines and a readable summary.
        case progressLines
        /// Logs, forget/check (or the user's own `--json`): restic's lines as sentences, without
        /// terminal control sequences; a `--json` of the user's passes through untouched.
        case logs
    }

    /// Bytes of each output stream kept in memory for the ping body and the outcome.
    static let outputTailBytes = 64 * 1024

    public let kind: Kind
    public let userArguments: [String]
    public let configuration: Configuration
    public let context: JobContext
    /// The read access the backup's restic really had (the context's, unless its restic could not start).
    private let readAccess: Locked<ReadAccess>

    public init(kind: Kind, userArguments: [String], configuration: Configuration, context: JobContext) {
        self.kind = kind
        self.userArguments = userArguments
        self.configuration = configuration
        self.context = context
        readAccess = Locked(context.readAccess)
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
        // report.summary is the whole sentence ("backup finished: …", "forget failed: …"): said once.
        let summary = "\(report.summary) (\(formatDuration(seconds)))"
        if report.exitCode == 0 {
            log.info(summary)
        } else if report.exitCode == 3 {
            log.warning("\(report.summary) (exit code 3, \(formatDuration(seconds)))")
        } else {
            log.error("\(report.summary) (exit code \(report.exitCode), \(formatDuration(seconds)))")
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
        let ownJSON = userArguments.contains("--json")
        if context.stdoutIsTerminal && !ownJSON { return .terminal }
        return kind == .backup && !ownJSON ? .progressLines : .logs
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
            // Said once, by the job's last line.
            let failure = CloudBackupError.from(error)
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
                var confirmed: String?
                if kind == .backup {
                    switch confirmSnapshot(route: route, statistics: statistics, output: result.standardOutput, started: started) {
                    case .failure(let problem):
                        return failure(ExitCode.failure, "backup failed: \(problem.message)", output: output)
                    case .success(let id):
                        confirmed = id
                    }
                }
                var summary = successSummary(result.standardOutput, confirmedSnapshot: confirmed)
                if outcome == .incompleteSnapshot {
                    summary += "; WARNING: " + Self.unreadableFilesSentence(result.standardError, access: readAccess.withLock { $0 })
                }
                return Report(exitCode: code, summary: summary, output: output, notes: notes, statistics: statistics)

            case .interrupted:
                if result.status == .signaled(SIGKILL) {
                    return failure(code, "\(kind.rawValue) interrupted: restic did not stop within STOP_GRACE_SECONDS=\(configuration.stopGraceSeconds) s of the stop request and was killed, so its lock may remain in the repository; the next job removes it once it has proven that this restic has ended", output: output)
                }
                // restic removes its lock as it stops, except one it was still creating when asked (a
                // race inside restic): that one's holder has provably ended, so the next job removes it.
                return failure(code, "\(kind.rawValue) interrupted: stopped on request; restic stopped cleanly, removing its lock", output: output)

            case .wrongPassword:
                return failure(code, "\(kind.rawValue) failed: \(CloudBackupError.wrongPassword(destination: configuration.destination.displayPath).description)", output: output)

            case .unreachable(let reason):
                let aftermath = kind == .backup
                    ? "If the backup had started, what it uploaded stays unreferenced in the repository (harmless; the next `forget --prune` that removes a snapshot, or `cloud-backup restic prune`, deletes it) and its lock may remain (the next job removes it once it has proven that this restic has ended)."
                    : "A lock of this run may remain (the next job removes it once it has proven that this restic has ended)."
                return failure(code, "\(kind.rawValue) failed: the repository could not be reached (\(reason))\(serverCause(route: route, since: started)). \(aftermath) Check the destination and the network.", output: output)

            case .failed(let reason):
                return failure(code, "\(kind.rawValue) failed: \(reason)\(serverCause(route: route, since: started))", output: output)

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
                    return failure(code, "\(kind.rawValue) failed: \(missingRepositoryReason(route: route, since: started))", output: output)
                }
                let creation = RepositoryCreation(configuration: configuration, context: context, route: route, runner: resticRunner)
                switch creation.createIfSafe() {
                case .failure(let error):
                    return failure(error.exitCode, "\(kind.rawValue) failed: \(error.description)", output: output)
                case .success(.created(let id)):
                    note("repository \(id) created at \(configuration.destination.displayPath); keep RESTIC_PASSWORD safe: without it these backups cannot be restored")
                case .success(.foundExisting):
                    note("the repository was created by another job meanwhile: backing up into it")
                }
                initialized = true
            }
        }
    }

    struct Unconfirmed: Error { var message: String }

    /// Restic's "snapshot … saved" is not proof enough: with its destination removed during the
    /// backup, restic 0.14 still says it and exits 0. The snapshot is read back on the same route
    /// (`restic cat snapshot ID`, one small object). Success: the snapshot's short id (nil for a dry run).
    private func confirmSnapshot(route: RepositoryRoute, statistics: BackupStatistics?, output: String, started: Date) -> Result<String?, Unconfirmed> {
        if userArguments.contains("--dry-run") || userArguments.contains("-n") { return .success(nil) }
        let invoker = ResticInvoker(configuration: configuration, runner: resticRunner, route: route)
        let id = statistics.map(\.snapshotID).flatMap { $0.isEmpty ? nil : $0 } ?? BackupSummary.parse(output).snapshotID
        guard let id else {
            // On a terminal restic's output is not ours to read: look for this run's snapshot instead.
            let host = Self.hostArgument(in: userArguments) ?? configuration.resticHost ?? context.hostName
            guard let listed = try? invoker.run(["snapshots", "--json", "--no-lock", "--latest", "1", "--host", host], timeout: 300),
                  listed.status.isSuccess,
                  let list = try? JSONSerialization.jsonObject(with: Data(listed.standardOutput.utf8)) as? [[String: Any]] else {
                return .failure(Unconfirmed(message: "restic reported success, but the repository's snapshots could not be listed afterwards to confirm it: the backup is not proven safe. Check the destination (`cloud-backup status`)"))
            }
            let recent = list.first { ($0["time"] as? String).flatMap(parseResticTime).map { $0 >= started.addingTimeInterval(-2) } ?? false }
            guard let recent else {
                return .failure(Unconfirmed(message: "restic reported success, but no snapshot of host \(host) from this run is in the repository: the backup is not safe. Was the destination removed, unmounted or emptied during the backup? Check it (`cloud-backup status`)"))
            }
            return .success(recent["short_id"] as? String)
        }
        guard let shown = try? invoker.run(["cat", "snapshot", id, "--no-lock"], timeout: 300) else {
            return .failure(Unconfirmed(message: "restic reported snapshot \(id.prefix(8)) saved, but reading it back did not finish within 300 s: the backup is not proven safe. Check the destination (`cloud-backup status`)"))
        }
        if shown.status.isSuccess { return .success(String(id.prefix(8))) }
        let outcome = ResticOutcome.classify(status: shown.status, output: shown.standardError)
        return .failure(Unconfirmed(message: "restic reported snapshot \(id.prefix(8)) saved, but it cannot be read back from the repository (\(outcome.reason)): the backup is not safe. Was the destination removed, unmounted or emptied during the backup? Check it (`cloud-backup status`) before the next run"))
    }

    /// Exit 3, as a sentence: which files, and what to do (in the image: how to read every file).
    static func unreadableFilesSentence(_ errors: String, access: ReadAccess = .plain) -> String {
        let (files, more) = ResticMessages.unreadableFiles(in: errors)
        let which = files.isEmpty ? "some files could not be read" : "\(files.count + more) file\(files.count + more == 1 ? "" : "s") could not be read: \(files.joined(separator: "; "))\(more > 0 ? "; and \(more) more" : "")"
        return "\(which) (restic exit code 3: the snapshot was saved without them). \(access.advice(unreadable: errors))"
    }

    /// What the REST server logged against the destination while this job ran: restic only saw
    /// "404" or "500" after its retries, the real cause (an expired login, a full disk, an
    /// unreachable endpoint) is in the server's record.
    private func serverCause(route: RepositoryRoute, since started: Date) -> String {
        guard case .restServer = route,
              let record = ServerRecord.read(stateDirectory: configuration.stateDirectory).record,
              let error = record.backendError, let time = record.backendErrorTime,
              time >= started.timeIntervalSince1970 - 60 else { return "" }
        return "; the REST server reports: \(error)"
    }

    /// restic said "no repository" to forget or check: through `rclone serve restic` that is also
    /// what failing credentials look like, so the destination is listed before saying "run a backup".
    private func missingRepositoryReason(route: RepositoryRoute, since started: Date) -> String {
        let destination = configuration.destination.displayPath
        switch DestinationInspector.inspect(configuration.destination, runner: context.runner, environment: configuration.childEnvironment, timeout: 120) {
        case .unreadable(let reason):
            return "restic found no repository, and the destination cannot be listed either: \(reason)\(serverCause(route: route, since: started)). Fix access to \(destination) (credentials, network); the repository was not touched"
        case let contents where contents.resticArtefacts["config"] != nil:
            return "a repository is at \(destination) (its config is there) but restic could not open it through \(route)\(serverCause(route: route, since: started)). Check the REST server's log and the destination's credentials"
        case let contents where !contents.resticArtefacts.isEmpty:
            return "there is no usable repository at \(destination): restic files are there (\(contents.artefactList)) but its config or keys are missing. Restore them from a copy if you have one"
        default:
            return "there is no restic repository at \(destination) (run a backup first: it creates one)"
        }
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

    /// The whole first line of the ping and last line of the log, for a success.
    private func successSummary(_ standardOutput: String, confirmedSnapshot: String?) -> String {
        switch kind {
        case .backup:
            let summary = BackupSummary.parse(standardOutput)
            if !summary.isEmpty { return "backup finished: \(summary.oneLine)" }
            return confirmedSnapshot.map { "backup finished: snapshot \($0) saved" } ?? "backup finished"
        case .check:
            guard let leftovers = Self.additionalFiles(standardOutput) else { return "check finished: no errors were found" }
            return "check finished: no errors were found; \(leftovers) additional file\(leftovers == 1 ? "" : "s") (data no snapshot uses) found: "
                + "what interrupted backups leave behind, harmless. The next `forget --prune` that removes a snapshot deletes \(leftovers == 1 ? "it" : "them"), "
                + "or now: `cloud-backup restic prune`"
        case .forget:
            guard let counts = Self.forgetCounts(standardOutput) else { return "forget finished" }
            return "forget finished: \(counts.removed) snapshot\(counts.removed == 1 ? "" : "s") removed, \(counts.kept) kept"
        }
    }

    /// restic check's "N additional files were found in the repo" (packs no index names: what an
    /// interrupted backup uploaded before it could save its index). nil when there are none.
    static func additionalFiles(_ output: String) -> Int? {
        for line in output.split(separator: "\n") {
            let words = line.split(separator: " ")
            if words.count >= 4, words[1...3] == ["additional", "files", "were"], let count = Int(words[0]), count > 0 { return count }
        }
        return nil
    }

    /// Snapshots kept and removed, summed over restic's groups ("keep 3 snapshots:", "remove 1 snapshots:").
    static func forgetCounts(_ output: String) -> (removed: Int, kept: Int)? {
        var removed = 0, kept = 0, seen = false
        for line in output.split(separator: "\n") {
            let words = line.split(separator: " ")
            guard words.count >= 3, words[2].hasPrefix("snapshot"), let count = Int(words[1]) else { continue }
            if words[0] == "keep" { kept += count; seen = true }
            if words[0] == "remove" { removed += count; seen = true }
        }
        return seen ? (removed, kept) : nil
    }

    /// One run of the job's own restic command, shown as `presentation` says.
    private func runMain(_ arguments: [String], route: RepositoryRoute) throws -> (ProcessResult, BackupStatistics?) {
        switch presentation {
        case .terminal:
            let errors = ReadableLog(readable: false, write: { writeStandardError($0) })
            var result = try runRestic(arguments, route: route, output: .inherit, errors: .observe(errors.observer), group: .foreground)
            result.standardError = Self.prefer(errors.text, over: result.standardError)
            return (result, nil)
        case .logs:
            let errors = ReadableLog(write: { writeStandardError($0) })
            if userArguments.contains("--json") {
                var result = try runRestic(arguments, route: route, output: .stream(tailLimit: Self.outputTailBytes), errors: .observe(errors.observer))
                result.standardError = Self.prefer(errors.text, over: result.standardError)
                let statistics = result.standardOutput.split(separator: "\n").lazy.compactMap(BackupStatistics.parse(jsonLine:)).last
                return (result, statistics)
            }
            let lines = ReadableLog(write: { writeStandardOutput($0) })
            var result = try runRestic(arguments, route: route, output: .observe(lines.observer), errors: .observe(errors.observer))
            result.standardOutput = Self.prefer(lines.text, over: result.standardOutput)
            result.standardError = Self.prefer(errors.text, over: result.standardError)
            return (result, nil)
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

    /// What an observer kept, unless it saw nothing (a runner that hands back text without calling
    /// observers, as the unit tests' fake runner does).
    static func prefer(_ observed: String, over returned: String) -> String {
        observed.isEmpty ? returned : observed
    }

    /// Every restic of the job is registered, so that a lock it leaves can later be proven abandoned.
    private var registry: ResticRunRegistry { ResticRunRegistry(stateDirectory: configuration.stateDirectory) }
    private var resticRunner: any ProcessRunning {
        RegisteringRunner(base: context.runner, registry: registry, hostName: context.hostName, log: log)
    }

    private func runRestic(_ arguments: [String], route: RepositoryRoute, output: OutputMode, errors: OutputMode,
                           group: ProcessGroupMode = .new) throws -> ProcessResult {
        // A backup reads its files with the capability-bearing restic when it can run (ReadAccess).
        let access = readAccess.withLock { $0 }
        let spec = ProcessSpec(
            executable: kind == .backup ? access.backupRestic : "restic",
            arguments: arguments,
            environment: ResticCommand.environment(base: configuration.childEnvironment, route: route, password: configuration.resticPassword),
            // `backup --stdin` reads what is piped to us; anything else never waits for a keyboard.
            standardInput: userArguments.contains("--stdin") ? .inherit : .null,
            standardOutput: output,
            standardError: errors,
            processGroup: group)
        do {
            return try runInterruptibly(spec, runner: resticRunner, signals: context.signals,
                                        graceSeconds: configuration.stopGraceSeconds, log: log)
        } catch CloudBackupError.system(let what, let code) where spec.executable != "restic" && (code == EPERM || code == EACCES) {
            // The kernel would not grant the file capability after all (a security module, a file system
            // without extended attributes): the plain restic still backs up what this user may read.
            log.warning("\(what) failed: \(String(cString: strerror(code))): backing up with the plain restic, which reads only what uid \(getuid()) may read")
            readAccess.withLock { $0 = .plain }
            var plain = spec
            plain.executable = "restic"
            return try runInterruptibly(plain, runner: resticRunner, signals: context.signals,
                                        graceSeconds: configuration.stopGraceSeconds, log: log)
        }
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
