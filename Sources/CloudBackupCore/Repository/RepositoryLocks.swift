import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A short restic command on the job's route, output captured: the probes and housekeeping around a
/// job (`cat config`, `list locks`, `init`, `cat snapshot`). Never streamed to the user.
struct ResticInvoker {
    let configuration: Configuration
    let runner: any ProcessRunning
    let route: RepositoryRoute

    func spec(_ arguments: [String]) -> ProcessSpec {
        ProcessSpec(executable: "restic", arguments: arguments,
                    environment: ResticCommand.environment(base: configuration.childEnvironment, route: route, password: configuration.resticPassword),
                    standardInput: .null, standardOutput: .collect(limit: 1 << 20), standardError: .tail(limit: 64 * 1024))
    }

    /// nil when it did not end within `timeout` seconds (it is killed then).
    func run(_ arguments: [String], timeout: Double = 300) throws -> ProcessResult? {
        try runner.run(spec(arguments), timeout: timeout)
    }
}

/// One restic lock file, as `restic cat lock ID` shows it.
public struct RepositoryLock: Sendable, Equatable {
    public var id: String
    /// Written at creation and at every refresh (restic refreshes every 5 minutes).
    public var time: Date
    public var exclusive: Bool
    public var hostname: String
    public var pid: Int32
    public var username: String

    public static func parse(id: String, json: String) -> RepositoryLock? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let timeText = object["time"] as? String, let time = parseResticTime(timeText) else { return nil }
        return RepositoryLock(id: id, time: time, exclusive: object["exclusive"] as? Bool ?? false,
                              hostname: object["hostname"] as? String ?? "", pid: (object["pid"] as? NSNumber)?.int32Value ?? 0,
                              username: object["username"] as? String ?? "")
    }

    public var holder: String {
        "\(exclusive ? "an exclusive" : "a shared") lock of PID \(pid) on \(hostname)\(username.isEmpty ? "" : " by \(username)")"
    }
}

/// Which locks may be removed, and removing exactly those.
///
/// The rule (docs/design.md#locks): a lock is removed only when its holder is provably gone:
/// 1. it was not refreshed for 30 minutes (restic refreshes every 5 and uses the same age itself), or
/// 2. it was made on this host name by a restic registered by a cloud-backup job of this state
///    directory, that registered restic no longer holds its registry file (it ended, however it was
///    killed, in whatever container), and no live registered restic has the same PID and host name.
/// Anything else (a live job, a restic on another host, a restic not started by cloud-backup that
/// shares the host name and so may run in another container) is waited for. `restic unlock` is never
/// used: it removes locks by "same host name, PID not running here", which kills live jobs of other
/// containers.
public enum RepositoryLocks {
    public static let staleAge: Double = 30 * 60

    public enum Verdict: Sendable, Equatable {
        case stale(String)
        case live(String)
    }

    public static func judge(_ lock: RepositoryLock, now: Date, hostName: String, registered: [ResticRunRegistry.Observed]) -> Verdict {
        let age = now.timeIntervalSince(lock.time)
        if age > staleAge {
            return .stale("not refreshed for \(Int(age / 60)) min (restic refreshes its locks every 5 min; after 30 they are stale)")
        }
        let becomesStale = ISO8601DateFormatter.string(from: lock.time.addingTimeInterval(staleAge), timeZone: .current,
                                                       formatOptions: [.withTime, .withColonSeparatorInTime])
        guard lock.hostname == hostName else {
            return .live("\(lock.holder): another host, whose processes cannot be seen from here; it counts as stale once not refreshed for 30 min (at \(becomesStale))")
        }
        let samePID = registered.filter { $0.entry?.hostname == lock.hostname && $0.entry?.pid == lock.pid }
        if let running = samePID.first(where: \.alive), let entry = running.entry {
            return .live("\(lock.holder): a running cloud-backup job (restic \(entry.command), started \(describeAge(now.timeIntervalSince1970 - entry.started)) ago)")
        }
        // A lock is at least as young as the restic that made it.
        if let ended = samePID.first(where: { !$0.alive && ($0.entry?.started ?? .infinity) <= lock.time.timeIntervalSince1970 + 5 }),
           let entry = ended.entry {
            return .stale("made by restic \(entry.command) (PID \(entry.pid)) of a cloud-backup job that has ended\(entry.killed == true ? " (killed)" : "")")
        }
        return .live("\(lock.holder), not a restic started by cloud-backup with this state directory: it may run in another container with the same host name, so only its age can prove it ended (stale at \(becomesStale) if not refreshed)")
    }

    /// What a sweep found and did.
    public struct Sweep: Sendable, Equatable {
        public var removed: [String] = []
        /// Why each remaining lock is respected.
        public var waitingFor: [String] = []
        /// The locks could not be read; nothing was removed.
        public var failure: String?
    }

    /// Reads every lock through `invoker`'s route, removes the provably stale ones, and tidies the
    /// registry of ended processes whose locks are gone.
    static func sweep(invoker: ResticInvoker, registry: ResticRunRegistry, hostName: String, log: Logger, now: () -> Date = { Date() }) -> Sweep {
        var sweep = Sweep()
        guard let listing = try? invoker.run(["list", "locks", "--no-lock"], timeout: 120), listing.status.isSuccess else {
            sweep.failure = "could not list the repository's locks"
            return sweep
        }
        let ids = listing.standardOutput.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { $0.count == 64 && $0.allSatisfy(\.isHexDigit) }
        let registered = registry.observe()
        var remaining: [RepositoryLock] = []
        for id in ids {
            // A lock can vanish between the listing and this read: its holder finished.
            guard let shown = try? invoker.run(["cat", "lock", id, "--no-lock"], timeout: 60), shown.status.isSuccess,
                  let lock = RepositoryLock.parse(id: id, json: shown.standardOutput) else { continue }
            switch judge(lock, now: now(), hostName: hostName, registered: registered) {
            case .stale(let reason):
                if let problem = remove(lockID: id, route: invoker.route, configuration: invoker.configuration, runner: invoker.runner) {
                    log.warning("could not remove the stale lock \(id.prefix(10)) (\(reason)): \(problem)")
                    sweep.waitingFor.append("\(lock.holder): stale, but removing it failed (\(problem))")
                    remaining.append(lock)
                } else {
                    log.info("removed the stale lock \(id.prefix(10)): \(lock.holder), \(reason)")
                    sweep.removed.append(id)
                }
            case .live(let reason):
                sweep.waitingFor.append(reason)
                remaining.append(lock)
            }
        }
        // Registry files of ended restic processes are kept only while a lock of theirs may remain.
        for observed in registered where !observed.alive {
            guard let entry = observed.entry else { continue }
            let stillLocked = remaining.contains { $0.hostname == entry.hostname && $0.pid == entry.pid }
            if !stillLocked { registry.removeIfEnded(observed.path) }
        }
        return sweep
    }

    /// Deletes one lock file through the route (restic has no command to remove one given lock).
    /// nil on success. An append-only REST server allows deletions under locks/.
    static func remove(lockID: String, route: RepositoryRoute, configuration: Configuration, runner: any ProcessRunning) -> String? {
        switch route {
        case .direct(.localDirectory(let path, _)):
            if unlink("\(path)/locks/\(lockID)") == 0 || errno == ENOENT { return nil }
            return String(cString: strerror(errno))
        case .direct(let destination):
            let spec = ProcessSpec(executable: "rclone", arguments: RcloneCommand.deleteFile(path: "\(destination.rclonePath)/locks/\(lockID)"),
                                   environment: configuration.childEnvironment, standardOutput: .tail(limit: 4096), standardError: .tail(limit: 16 * 1024))
            guard let result = try? runner.run(spec, timeout: 120) else { return "rclone deletefile did not finish within 120 s" }
            if result.status.isSuccess { return nil }
            return DestinationInspector.rcloneReason(result.standardError) ?? "\(result.status)"
        case .restServer(let port, let credentials):
            switch RestServerProbe.requestStatus(method: "DELETE", host: "127.0.0.1", port: port, path: "/locks/\(lockID)",
                                                 credentials: credentials, timeout: 30) {
            case 200?, 204?, 404?: return nil
            case let status?: return "the REST server answered HTTP \(status)"
            case nil: return "the REST server did not answer"
            }
        }
    }
}

func describeAge(_ seconds: Double) -> String {
    if seconds < 90 { return "\(Int(seconds.rounded())) s" }
    if seconds < 5400 { return "\(Int((seconds / 60).rounded())) min" }
    return String(format: "%.1f h", seconds / 3600)
}
