import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The built-in schedule of `start-server` (docs/design.md, "Built-in schedule"). Each run is the
/// same binary's own subcommand (`cloud-backup backup /backup`…) started as a child process, so it is
/// exactly the job ofelia or a person would run: its pings, metrics, locks and exit code.
///
/// - No overlap: a job whose time comes while its previous run is still going (or still waiting) is
///   not started twice; that is logged, counted in schedule.json, and said in the next run's start ping.
/// - Jobs that use the repository run one at a time, in the order they came due; the token check does
///   not wait for them.
/// - Missed runs: at start, a job with a scheduled time since its last successful run (VM off at
///   night) runs once, as soon as the REST server has settled (SCHEDULE_CATCH_UP=false turns this off).
/// - Stop: running jobs get SIGTERM (restic then gets SIGINT and removes its lock), SIGKILL after
///   STOP_GRACE_SECONDS + 2 s; the caller stops the REST server only after that.
public final class Scheduler: @unchecked Sendable {
    public static let noteVariable = "CLOUD_BACKUP_SCHEDULE_NOTE"

    let settings: ScheduleSettings
    let context: JobContext
    let executable: String
    let stateDirectory: String
    let graceSeconds: Int
    /// True once the REST server is ready or has failed its first start: catch-up runs wait for it so
    /// that they go through the server like scheduled ones.
    let serverSettled: @Sendable () -> Bool

    private let lock = NSLock()
    private var stopRequested = false
    private var running: [String: Run] = [:]
    private let ended = DispatchGroup()

    private struct Run {
        let job: ScheduledJob
        let child: any RunningProcess
        let started: Date
    }

    /// Why a run starts; recorded in schedule.json as its raw value.
    private enum Trigger: String {
        case scheduled
        case catchUp = "catch-up"
    }

    private struct Due {
        let job: ScheduledJob
        let time: Date
        let trigger: Trigger
    }

    public init(settings: ScheduleSettings, context: JobContext, executable: String, stateDirectory: String,
                graceSeconds: Int, serverSettled: @escaping @Sendable () -> Bool) {
        self.settings = settings
        self.context = context
        self.executable = executable
        self.stateDirectory = stateDirectory
        self.graceSeconds = graceSeconds
        self.serverSettled = serverSettled
    }

    private var log: Logger { context.log }

    public func start() {
        ended.enter()
        let thread = Thread { [self] in
            loop()
            ended.leave()
        }
        thread.name = "schedule"
        thread.start()
    }

    /// Stops scheduling and every running job; returns, to every caller, when they have ended (or
    /// been killed).
    public func stopAndWait() {
        lock.withLock { stopRequested = true }
        ended.wait()
    }

    private var isStopping: Bool { lock.withLock { stopRequested } }

    private func loop() {
        var record = ScheduleRecord.read(stateDirectory: stateDirectory) ?? ScheduleRecord()
        let started = Date()
        var nextRuns: [String: Date] = [:]
        var catchUps: [Due] = []
        for job in settings.jobs {
            var jobRecord = record.jobs[job.name] ?? .init(expression: job.expression.text, since: started)
            jobRecord.expression = job.expression.text
            jobRecord.runningPID = nil
            let reference = jobRecord.lastSuccess ?? jobRecord.since
            if settings.catchUp, let missed = settings.nextRun(of: job, after: reference), missed <= started {
                catchUps.append(Due(job: job, time: missed, trigger: .catchUp))
                let last = jobRecord.lastSuccess.map { "its last successful run started \(formatScheduleTime($0, timeZone: settings.timeZone))" }
                    ?? "it has not succeeded since it was scheduled (\(formatScheduleTime(jobRecord.since, timeZone: settings.timeZone)))"
                log.info("schedule: \(job.name) missed a scheduled run (the first due \(formatScheduleTime(missed, timeZone: settings.timeZone)); \(last)): running it once, as soon as the REST server has started (SCHEDULE_CATCH_UP=false turns this off)")
            }
            let next = settings.nextRun(of: job, after: started)
            nextRuns[job.name] = next
            jobRecord.nextRun = next
            record.jobs[job.name] = jobRecord
            log.info("schedule: \(job.name) (`cloud-backup \(job.commandArguments.map(shellQuoted).joined(separator: " "))`) at \(settings.describe(job)); next run \(next.map { formatScheduleTime($0, timeZone: settings.timeZone) } ?? "never")")
        }
        save(record)

        var queue: [Due] = []
        var notes: [String: String] = [:]
        while !isStopping {
            let now = Date()
            var changed = reap(&record)
            if !catchUps.isEmpty && (serverSettled() || now.timeIntervalSince(started) > 300) {
                // A job that has already run on its own time meanwhile (the server took long to settle)
                // has caught up by itself.
                let ranSinceStart = Set(record.jobs.filter { ($0.value.lastStart ?? .distantPast) >= started }.keys)
                queue += catchUps.filter { due in !ranSinceStart.contains(due.job.name) && !queue.contains { $0.job.name == due.job.name } }
                catchUps = []
            }
            for job in settings.jobs {
                guard let due = nextRuns[job.name], due <= now else { continue }
                let busy = lock.withLock { running[job.name] }
                if let busy {
                    let message = "\(job.name) was due at \(formatScheduleTime(due, timeZone: settings.timeZone)) while its run started \(formatScheduleTime(busy.started, timeZone: settings.timeZone)) was still going: not started twice"
                    log.warning("schedule: \(message)")
                    notes[job.name] = message
                    record.jobs[job.name]?.skippedRuns += 1
                } else if queue.contains(where: { $0.job.name == job.name }) {
                    let message = "\(job.name) was due at \(formatScheduleTime(due, timeZone: settings.timeZone)) while its previous run was still waiting for another job to end: not started twice"
                    log.warning("schedule: \(message)")
                    notes[job.name] = message
                    record.jobs[job.name]?.skippedRuns += 1
                } else {
                    queue.append(Due(job: job, time: due, trigger: .scheduled))
                }
                // From now, not from the missed time: after a suspend, one run rather than a burst.
                let next = settings.nextRun(of: job, after: max(now, due))
                nextRuns[job.name] = next
                record.jobs[job.name]?.nextRun = next
                changed = true
            }
            var waiting: [Due] = []
            for due in queue {
                let blocked = lock.withLock {
                    running[due.job.name] != nil || (due.job.usesRepository && running.values.contains { $0.job.usesRepository })
                }
                if blocked || isStopping {
                    waiting.append(due)
                    continue
                }
                launch(due, note: notes.removeValue(forKey: due.job.name), record: &record)
                changed = true
            }
            queue = waiting
            if changed { save(record) }
            context.sleep(0.1)
        }
        stopRunningJobs()
        _ = reap(&record)
        save(record)
    }

    private func launch(_ due: Due, note: String?, record: inout ScheduleRecord) {
        var environment = context.environment
        environment[Scheduler.noteVariable] = note
        let spec = ProcessSpec(executable: executable, arguments: due.job.commandArguments, environment: environment,
                               standardInput: .null,
                               // Through a pipe, not our terminal: the job writes its log lines (and
                               // does not take the terminal's foreground from the server).
                               standardOutput: .stream(tailLimit: 4096), standardError: .stream(tailLimit: 4096),
                               processGroup: .new)
        let now = Date()
        do {
            let child = try context.runner.launch(spec)
            lock.withLock { running[due.job.name] = Run(job: due.job, child: child, started: now) }
            log.info("schedule: starting \(due.job.name) (\(due.trigger == .catchUp ? "catch-up of the first missed run, due " : "due ")\(formatScheduleTime(due.time, timeZone: settings.timeZone)), PID \(child.pid))")
            record.jobs[due.job.name]?.lastStart = now
            record.jobs[due.job.name]?.lastEnd = nil
            record.jobs[due.job.name]?.lastExitCode = nil
            record.jobs[due.job.name]?.lastTrigger = due.trigger.rawValue
            record.jobs[due.job.name]?.runningPID = child.pid
            // A stop that came while it was being started must reach it too.
            if isStopping { child.send(SIGTERM) }
        } catch {
            let failure = CloudBackupError.from(error)
            log.error("schedule: could not start \(due.job.name): \(failure.description)")
            record.jobs[due.job.name]?.lastStart = now
            record.jobs[due.job.name]?.lastEnd = now
            record.jobs[due.job.name]?.lastExitCode = failure.exitCode
            record.jobs[due.job.name]?.lastTrigger = due.trigger.rawValue
        }
    }

    /// Records the runs that have ended; true if any had.
    private func reap(_ record: inout ScheduleRecord) -> Bool {
        let done = lock.withLock { running.filter { $0.value.child.hasExited } }
        for (name, run) in done {
            let result = run.child.wait()
            lock.withLock { _ = running.removeValue(forKey: name) }
            let end = Date()
            let code = result.status.shellExitCode
            record.jobs[name]?.lastEnd = end
            record.jobs[name]?.lastExitCode = code
            record.jobs[name]?.runningPID = nil
            if code == 0 { record.jobs[name]?.lastSuccess = run.started }
            let next = record.jobs[name]?.nextRun.map { "; next run \(formatScheduleTime($0, timeZone: settings.timeZone))" } ?? ""
            let line = "schedule: \(name) ended (\(result.status), \(formatDuration(end.timeIntervalSince(run.started))))\(next)"
            if code == 0 { log.info(line) } else { log.warning(line) }
        }
        return !done.isEmpty
    }

    private func stopRunningJobs() {
        let children = lock.withLock { running }
        guard !children.isEmpty else { return }
        for (name, run) in children {
            log.info("schedule: stopping \(name) (PID \(run.child.pid)): SIGTERM, up to \(graceSeconds + 2) s")
            run.child.send(SIGTERM)
        }
        let deadline = Date().addingTimeInterval(Double(graceSeconds + 2))
        while children.values.contains(where: { !$0.child.hasExited }) {
            if Date() > deadline {
                for (name, run) in children where !run.child.hasExited {
                    log.warning("schedule: \(name) did not stop within \(graceSeconds + 2) s: SIGKILL (its restic lock may remain; the next job removes it once it is provably stale)")
                    run.child.send(SIGKILL)
                }
                let killed = Date().addingTimeInterval(2)
                while children.values.contains(where: { !$0.child.hasExited }) && Date() < killed { context.sleep(0.05) }
                break
            }
            context.sleep(0.05)
        }
    }

    private func save(_ record: ScheduleRecord) {
        do {
            try record.write(stateDirectory: stateDirectory)
        } catch {
            log.warning("schedule: could not write \(ScheduleRecord.path(stateDirectory: stateDirectory)) (\(describe(error))): status cannot show the schedule, and a missed run may not be caught up after a restart")
        }
    }
}
