import Foundation

/// The jobs' lock rule (RepositoryLocks, docs/design.md "Locks") for restic commands that read —
/// `ls` and `restore` of `drill` and `restore` take restic's shared lock, which an exclusive lock
/// (check, prune) blocks: a lock whose holder has provably ended is removed, any other is waited for,
/// with backoff, until LOCK_WAIT_SECONDS have passed; then the command is busy (exit 75).
/// `restic unlock` is never run.
struct LockWait {
    let configuration: Configuration
    let context: JobContext
    let route: RepositoryRoute
    /// The registering runner, so that the sweep can tell which locks our own ended restic left.
    let runner: any ProcessRunning
    let what: String
    let deadline: Date

    init(configuration: Configuration, context: JobContext, route: RepositoryRoute, runner: any ProcessRunning, what: String) {
        self.configuration = configuration
        self.context = context
        self.route = route
        self.runner = runner
        self.what = what
        self.deadline = Date().addingTimeInterval(Double(configuration.lockWaitSeconds))
    }

    enum Outcome {
        /// restic ran to an end that is not "locked"; a stop request turns any failure into `.interrupted`.
        case finished(ProcessResult, ResticOutcome)
        case busy(CloudBackupError)
        /// A stop request came while waiting for a lock.
        case stopped
    }

    func run(_ attempt: () throws -> ProcessResult) throws -> Outcome {
        var waits = 0
        var retriesAfterRemoval = 0
        var lastReason = ""
        while true {
            let result = try attempt()
            var outcome = ResticOutcome.classify(status: result.status, output: result.standardError)
            if context.signals.stopRequested, outcome != .success { outcome = .interrupted }
            guard case .locked(let holder) = outcome else { return .finished(result, outcome) }
            let registry = ResticRunRegistry(stateDirectory: configuration.stateDirectory)
            let invoker = ResticInvoker(configuration: configuration, runner: runner, route: route)
            let sweep = RepositoryLocks.sweep(invoker: invoker, registry: registry, hostName: context.hostName, log: context.log)
            if !sweep.removed.isEmpty && retriesAfterRemoval < 3 {
                retriesAfterRemoval += 1
                context.log.info("removed \(sweep.removed.count) stale lock\(sweep.removed.count == 1 ? "" : "s") whose holder has provably ended; retrying")
                continue
            }
            let waitingFor = sweep.waitingFor.isEmpty ? [sweep.failure ?? holder] : sweep.waitingFor
            let reason = waitingFor.joined(separator: "; ")
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 {
                return .busy(.repositoryBusy(waitedSeconds: configuration.lockWaitSeconds, holder: reason))
            }
            if reason != lastReason {
                context.log.info("the repository is locked: \(reason). \(what) waits up to \(Int(remaining.rounded())) s (LOCK_WAIT_SECONDS) for it")
                lastReason = reason
            }
            let delay = min(remaining, min(5 * pow(2, Double(waits)), 60) * context.backoffScale)
            waits += 1
            let end = Date().addingTimeInterval(delay)
            while Date() < end {
                if context.signals.stopRequested { return .stopped }
                context.sleep(min(0.2, max(0, end.timeIntervalSinceNow)))
            }
            if context.signals.stopRequested { return .stopped }
        }
    }
}
