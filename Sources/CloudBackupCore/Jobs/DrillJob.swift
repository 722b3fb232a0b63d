import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `drill`: proves that this host's latest snapshot gives back the files it should, as a monitored job
/// like `backup`, `forget` and `check` (DRILL_CHECK_URL, drill.prom).
///
/// It reads the snapshot's file list (`restic ls --json`), checks the snapshot itself (its age, that
/// it holds files, that it holds every DRILL_PATHS entry), chooses DRILL_FILES files
/// (`DrillSelection`), restores them with `restic restore --verify` into a private temporary directory
/// (never into the live paths), and compares each with the live file by SHA-256 when the live file's
/// size and modification time are still those the snapshot recorded. restic takes only its shared
/// (reader) lock. The temporary directory is removed on every way out, a stop request included.
public struct DrillJob {
    public let configuration: Configuration
    public let context: JobContext
    /// Seeds the choice of files (its UTC day) and measures the snapshot's age.
    public let now: Date

    public init(configuration: Configuration, context: JobContext, now: Date = Date()) {
        self.configuration = configuration
        self.context = context
        self.now = now
    }

    private var log: Logger { context.log }

    /// Runs the drill and returns the exit code: 0 passed, 1 failed, 75 busy, 130 stopped, 73 no place
    /// for the temporary directory. Never throws, so the final ping is always sent.
    public func run() -> Int32 {
        let monitor = HealthchecksMonitor(check: configuration.drillCheckURL, configuration: configuration, context: context)
        monitor.start()
        let started = Date()
        let outcome = execute()
        let seconds = Date().timeIntervalSince(started)
        let summary = "\(outcome.summary) (\(formatDuration(seconds)))"
        if outcome.exitCode == 0 {
            log.info(summary)
        } else {
            log.error("\(outcome.summary) (exit code \(outcome.exitCode), \(formatDuration(seconds)))")
        }
        // Metrics first: a slow Healthchecks at `docker stop` must not cost them.
        if let directory = configuration.metricsDirectory {
            let metrics = JobMetrics(job: "drill", start: started, end: Date(), exitCode: outcome.exitCode, drill: outcome.statistics)
            do {
                try metrics.write(to: directory)
            } catch {
                log.warning("could not write metrics to \(directory): \(describe(error)); the job's result is not affected.")
            }
        }
        monitor.finish(exitCode: outcome.exitCode, summary: summary, output: outcome.transcript)
        return outcome.exitCode
    }

    struct Outcome {
        var exitCode: Int32
        var summary: String
        /// Our lines and restic's output, in the order they came, for the ping body.
        var transcript: String
        var statistics: DrillStatistics?
    }

    /// The transcript as it grows.
    private final class Notes {
        var lines: [String] = []
        func restic(_ output: String) {
            if !output.isEmpty { lines.append(output) }
        }
    }

    private func execute() -> Outcome {
        let notes = Notes()
        func note(_ message: String) {
            log.info(message)
            notes.lines.append("cloud-backup: \(message)")
        }
        func outcome(_ code: Int32, _ summary: String, statistics: DrillStatistics? = nil) -> Outcome {
            Outcome(exitCode: code, summary: summary, transcript: notes.lines.joined(separator: "\n"), statistics: statistics)
        }
        func interrupted(_ detail: String = "") -> Outcome {
            outcome(ExitCode.interrupted, "drill interrupted: stopped on request\(detail)")
        }

        guard ExecutableLookup.resolve("restic", environment: configuration.childEnvironment) != nil else {
            let error = CloudBackupError.programNotFound(name: "restic", path: configuration.childEnvironment["PATH"] ?? "")
            log.error(error.description)
            return outcome(error.exitCode, "drill failed: restic is not installed")
        }
        do {
            try InfnSetup.prepare(configuration, context: context)
        } catch {
            let failure = CloudBackupError.from(error)
            return outcome(failure.exitCode, "drill not run: \(failure.description)")
        }
        let registry = ResticRunRegistry(stateDirectory: configuration.stateDirectory)
        registry.removeLongEnded()
        // Every restic of the drill is registered, so that a lock it leaves can be proven abandoned.
        let runner = RegisteringRunner(base: context.runner, registry: registry, hostName: context.hostName, log: log)
        let route = RouteFinder.find(configuration: configuration, log: log)
        note("drill using \(route)")
        let host = configuration.resticHost ?? context.hostName
        let invoker = ResticInvoker(configuration: configuration, runner: runner, route: route)
        let cache = ResticCommand.cacheArguments(euid: geteuid(), stateDirectoryOwner: ownerOf(configuration.stateDirectory))

        // 1. This host's newest snapshot.
        let snapshot: SnapshotSummary
        do {
            guard let listed = try invoker.run(ResticCommand.latestSnapshots(host: host) + cache, timeout: 300) else {
                return outcome(ExitCode.failure, "drill failed: listing the snapshots did not finish within 300 s. Check the destination (`cloud-backup status`)")
            }
            guard listed.status.isSuccess else {
                notes.restic(listed.combinedOutput)
                let failure = failureSentence(ResticOutcome.classify(status: listed.status, output: listed.standardError), step: "listing the snapshots")
                return outcome(failure.code ?? listed.status.shellExitCode, failure.sentence)
            }
            switch SnapshotSummary.newest(inSnapshotsJSON: listed.standardOutput, host: host) {
            case .failure(let error):
                return outcome(ExitCode.failure, "drill failed: \(error.description)")
            case .success(nil):
                return outcome(ExitCode.failure, "drill failed: the repository holds no snapshot of host \(host): the backup job has not run here yet, or it saves under another host name (RESTIC_HOST)")
            case .success(let newest?):
                snapshot = newest
            }
        } catch {
            let failure = CloudBackupError.from(error)
            return outcome(failure.exitCode, "drill failed: \(failure.description)")
        }
        if context.signals.stopRequested { return interrupted() }

        var problems: [String] = []
        let age = now.timeIntervalSince(snapshot.time)
        let maximumAge = configuration.snapshotMaximumAgeHours
        if age > Double(maximumAge) * 3600 {
            problems.append("snapshot \(snapshot.shortID) was taken \(describeSnapshotAge(age)), longer ago than SNAPSHOT_MAX_AGE_HOURS=\(maximumAge) allows: the backup job is not running or failing (check its log and Healthchecks)")
        }
        note("snapshot \(snapshot.shortID) of host \(host), taken \(describeSnapshotAge(age)), of \(snapshot.paths.joined(separator: ", "))")

        // 2. Its files, and whether it holds what it must.
        let scan = SnapshotScan(expected: configuration.drillPaths)
        var listSpec = invoker.spec(ResticCommand.listSnapshot(snapshot.id) + cache)
        listSpec.standardOutput = .observe(LineObserver { [weak scan] line in scan?.observe(line) })
        listSpec.standardError = .tail(limit: 64 * 1024)
        let waitForList = LockWait(configuration: configuration, context: context, route: route, runner: runner, what: "the drill")
        do {
            switch try waitForList.run({
                scan.reset()
                return try runInterruptibly(listSpec, runner: runner, signals: context.signals, graceSeconds: configuration.stopGraceSeconds, log: log)
            }) {
            case .stopped:
                return interrupted()
            case .busy(let busy):
                return outcome(busy.exitCode, "drill not run: repository busy — \(busy.description)")
            case .finished(_, .interrupted):
                return interrupted()
            case .finished(let result, let resticOutcome):
                guard resticOutcome == .success else {
                    notes.restic(result.standardError)
                    let failure = failureSentence(resticOutcome, step: "listing snapshot \(snapshot.shortID)")
                    return outcome(failure.code ?? result.status.shellExitCode, failure.sentence)
                }
                // A runner that hands back text without calling observers (the unit tests' fake).
                if scan.isEmpty { result.standardOutput.split(separator: "\n").forEach(scan.observe) }
            }
        } catch {
            let failure = CloudBackupError.from(error)
            return outcome(failure.exitCode, "drill failed: \(failure.description)")
        }
        let (candidates, coverage) = scan.result
        if candidates.isEmpty {
            problems.append("snapshot \(snapshot.shortID) holds no file: the backup saved nothing (are the backed-up directories mounted and readable?)")
        }
        problems += coverage.problems(snapshot: snapshot.shortID)
        guard !candidates.isEmpty else {
            return outcome(ExitCode.failure, "drill failed: " + problems.joined(separator: "; "))
        }

        if context.signals.stopRequested { return interrupted() }

        // 3. The files, restored into a private directory outside every backed-up path.
        let chosen = DrillSelection.choose(candidates, roots: snapshot.paths, date: now, count: configuration.drillFiles)
        let temporary = configuration.childEnvironment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        guard let parent = DrillWorkspace.chooseParent(stateDirectory: configuration.stateDirectory, temporaryDirectory: temporary,
                                                       backedUp: snapshot.paths + configuration.drillPaths) else {
            return outcome(ExitCode.cannotCreate, "drill not run: both the state directory (\(configuration.stateDirectory)) and the temporary directory (\(temporary)) lie inside backed-up paths, and the drill never restores into the live data. Set TMPDIR to a directory outside \(snapshot.paths.joined(separator: ", "))")
        }
        for path in DrillWorkspace.removeAbandoned(in: parent) {
            note("removed \(path), the temporary directory of a drill that has ended")
        }
        let workspace: DrillWorkspace
        do {
            workspace = try DrillWorkspace.create(in: parent)
        } catch {
            let failure = CloudBackupError.from(error)
            return outcome(failure.exitCode, "drill not run: \(failure.description)")
        }
        let total = chosen.reduce(Int64(0)) { $0 + $1.size }
        note("restoring \(chosen.count) of the snapshot's \(candidates.count) files (\(formatSize(total))) into \(workspace.path) (private, removed at the end)")
        let restored = restoreAndCompare(chosen, snapshot: snapshot, workspace: workspace, route: route, runner: runner, invoker: invoker,
                                         cache: cache, notes: notes)
        let removal = workspace.remove()
        if let removal {
            log.warning("could not remove \(workspace.path) completely (\(removal)): the next drill removes it, or remove it by hand")
        }
        let removedPhrase = removal == nil ? "; the temporary directory was removed" : "; the temporary directory \(workspace.path) could not be removed completely (\(removal!))"

        switch restored {
        case .interrupted:
            return interrupted(removedPhrase)
        case .busy(let busy):
            return outcome(busy.exitCode, "drill not run: repository busy — \(busy.description)")
        case .failed(let code, let sentence):
            return outcome(code, sentence + (problems.isEmpty ? "" : "; " + problems.joined(separator: "; ")))
        case .compared(let results, let bytes, let resticProblems):
            let report = DrillReport(snapshot: snapshot, now: now, results: results, restoredBytes: bytes,
                                     snapshotProblems: problems + resticProblems, expectedPaths: configuration.drillPaths)
            for line in report.fileLines { note(line) }
            let statistics = DrillStatistics(identical: report.identical, skipped: report.skippedCount, failed: report.failures.count,
                                             restoredBytes: bytes, snapshotTime: snapshot.time, snapshotAgeSeconds: age)
            return outcome(report.passed ? ExitCode.success : ExitCode.failure, report.summary, statistics: statistics)
        }
    }

    enum Restored {
        case compared([(candidate: DrillCandidate, result: DrillFileResult)], bytes: Int64, problems: [String])
        case failed(Int32, String)
        case busy(CloudBackupError)
        case interrupted
    }

    private func restoreAndCompare(_ chosen: [DrillCandidate], snapshot: SnapshotSummary, workspace: DrillWorkspace, route: RepositoryRoute,
                                   runner: any ProcessRunning, invoker: ResticInvoker, cache: [String], notes: Notes) -> Restored {
        let arguments = ResticCommand.restore(snapshot: snapshot.id, target: workspace.target,
                                              includes: chosen.map { ResticCommand.includePattern(forPath: $0.path) }) + cache
        var spec = invoker.spec(arguments)
        spec.standardOutput = .tail(limit: 64 * 1024)
        spec.standardError = .tail(limit: 64 * 1024)
        let waitForRestore = LockWait(configuration: configuration, context: context, route: route, runner: runner, what: "the drill")
        let result: ProcessResult
        let resticOutcome: ResticOutcome
        do {
            switch try waitForRestore.run({
                try runInterruptibly(spec, runner: runner, signals: context.signals, graceSeconds: configuration.stopGraceSeconds, log: log)
            }) {
            case .stopped: return .interrupted
            case .busy(let busy): return .busy(busy)
            case .finished(let finished, let classified):
                result = finished
                resticOutcome = classified
            }
        } catch {
            let failure = CloudBackupError.from(error)
            return .failed(failure.exitCode, "drill failed: \(failure.description)")
        }
        notes.restic(result.combinedOutput)
        if resticOutcome == .interrupted { return .interrupted }

        // restic names a file it could not restore by its snapshot path, and one that --verify found
        // wrong by its path under the target.
        let paths = chosen.map(\.path)
        let errors = RestoreErrors.parse(result.standardError, paths: paths + paths.map { workspace.target + $0 })
        var reasons: [String: [String]] = [:]
        for (path, reason) in errors.byFile {
            let original = path.hasPrefix(workspace.target + "/") ? String(path.dropFirst(workspace.target.count)) : path
            reasons[original, default: []].append(reason)
        }
        if resticOutcome != .success && reasons.isEmpty {
            let failure = failureSentence(resticOutcome, step: "restoring from snapshot \(snapshot.shortID)")
            return .failed(failure.code ?? result.status.shellExitCode, failure.sentence)
        }
        var problems: [String] = []
        if !errors.other.isEmpty {
            problems.append("restic also reported: \(errors.other.prefix(5).joined(separator: "; "))")
        }

        // 4. Each restored file against the live one.
        var results: [(candidate: DrillCandidate, result: DrillFileResult)] = []
        var bytes: Int64 = 0
        let stop = { context.signals.stopRequested }
        for candidate in chosen {
            if stop() { return .interrupted }
            if let why = reasons[candidate.path]?.first {
                // restic's first error for a file is the cause; the next ones follow from it
                // ("UtimesNano: no such file or directory" for the file it could not write).
                results.append((candidate, .failed("restic could not restore it: \(why)")))
                continue
            }
            let restoredPath = workspace.target + candidate.path
            switch Self.liveFile(restoredPath) {
            case .regular(let size, _) where size == candidate.size:
                break
            case .regular(let size, _):
                results.append((candidate, .failed("restored with \(size) bytes where the snapshot records \(candidate.size)")))
                continue
            default:
                results.append((candidate, .failed("restic reported no error but did not restore it")))
                continue
            }
            bytes += candidate.size
            let live = Self.liveFile(candidate.path)
            if let skip = DrillComparison.skipReason(candidate, live: live) {
                results.append((candidate, .skipped(skip)))
                continue
            }
            let restoredHash: String
            switch SHA256.hashFile(atPath: restoredPath, stop: stop) {
            case .failure(.stopped): return .interrupted
            case .failure(.cannotRead(let reason)):
                results.append((candidate, .failed("the restored copy cannot be read (\(reason))")))
                continue
            case .success(let hash): restoredHash = hash
            }
            switch SHA256.hashFile(atPath: candidate.path, stop: stop) {
            case .failure(.stopped): return .interrupted
            case .failure(.cannotRead):
                // The live file vanished or became unreadable between its stat and its read.
                results.append((candidate, .skipped(DrillComparison.skipReason(candidate, live: Self.liveFile(candidate.path)) ?? .unreadable)))
            case .success(let liveHash):
                results.append((candidate, DrillComparison.verdict(candidate, restoredHash: restoredHash, liveHash: liveHash,
                                                                   liveAfter: Self.liveFile(candidate.path))))
            }
        }
        return .compared(results, bytes: bytes, problems: problems)
    }

    /// A file as lstat(2) sees it (a symbolic link is not followed: it is not the regular file saved).
    static func liveFile(_ path: String) -> LiveFile {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            return errno == ENOENT || errno == ENOTDIR ? .missing : .unreadable(String(cString: strerror(errno)))
        }
        guard info.st_mode & S_IFMT == S_IFREG else { return .notRegular }
        return .regular(size: Int64(info.st_size), modified: FileTime(seconds: Int64(info.st_mtim.tv_sec), nanoseconds: Int32(info.st_mtim.tv_nsec)))
    }

    /// A failed restic step as the job's last line; `code` overrides restic's exit code when set.
    private func failureSentence(_ outcome: ResticOutcome, step: String) -> (code: Int32?, sentence: String) {
        switch outcome {
        case .wrongPassword:
            return (nil, "drill failed: \(CloudBackupError.wrongPassword(destination: configuration.destination.displayPath).description)")
        case .repositoryMissing:
            return (nil, "drill failed: there is no restic repository at \(configuration.destination.displayPath) (or it cannot be opened): \(step) failed. Run `cloud-backup status` to see which")
        case .unreachable(let reason):
            return (nil, "drill failed: the repository could not be reached while \(step) (\(reason)). Check the destination and the network")
        case .interrupted:
            return (ExitCode.interrupted, "drill interrupted: stopped on request")
        case .failed(let reason):
            return (nil, "drill failed: \(step) failed: \(reason)")
        case .locked(let holder):
            return (ExitCode.busy, "drill not run: the repository is locked (\(holder))")
        case .success, .incompleteSnapshot:
            return (ExitCode.failure, "drill failed: \(step) failed")
        }
    }
}

/// Reads `restic ls --json` line by line, as it arrives (a snapshot may list millions of files), keeping
/// only what the drill needs: the regular files, and whether DRILL_PATHS are covered.
final class SnapshotScan: @unchecked Sendable {
    private let lock = NSLock()
    private let expected: [String]
    private var candidates: [DrillCandidate] = []
    private var coverage: PathCoverage

    init(expected: [String]) {
        self.expected = expected
        coverage = PathCoverage(expected: expected)
    }

    func reset() {
        lock.lock()
        defer { lock.unlock() }
        candidates = []
        coverage = PathCoverage(expected: expected)
    }

    func observe(_ line: Substring) {
        guard let node = SnapshotNode.parse(jsonLine: line) else { return }
        lock.lock()
        defer { lock.unlock() }
        coverage.observe(node)
        // restic's JSON replaces bytes of a name that is not UTF-8 with U+FFFD: such a path cannot be
        // named to restore or found on disk again, so it is not chosen (it still counts for coverage).
        if node.kind == .file, !node.path.contains("\u{FFFD}") {
            candidates.append(DrillCandidate(path: node.path, size: node.size, modified: node.modified))
        }
    }

    var isEmpty: Bool {
        lock.lock()
        defer { lock.unlock() }
        return candidates.isEmpty
    }

    var result: ([DrillCandidate], PathCoverage) {
        lock.lock()
        defer { lock.unlock() }
        return (candidates, coverage)
    }
}
