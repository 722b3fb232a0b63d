import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What a running `start-server` says about itself, in the state directory, so that jobs use the
/// REST server only when it is provably this tool's, serving their destination.
///
/// `$CLOUD_BACKUP_STATE_DIR/server.lock` is flock'ed by start-server for its whole life (one server per
/// state directory; the kernel releases it however the server ends) and `server.json` describes it.
/// A job trusts what answers on 127.0.0.1:RESTIC_REST_PORT only when (docs/design.md#server-identity):
/// the lock is held, the record names the job's port and destination, the job runs in the server's
/// network namespace (else 127.0.0.1 is another machine's loopback, as far as the job is concerned),
/// the server is ready, and, when the job can see the server's processes (same PID namespace), the
/// port's listener is the rclone the record names.
public struct ServerRecord: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// rclone was started and has not answered yet (or is being restarted).
        case starting
        case ready
    }

    public var pid: Int32
    public var pidNamespace: String
    public var networkNamespace: String
    public var hostname: String
    public var port: Int
    /// The destination as rclone names it.
    public var destination: String
    public var appendOnly: Bool
    public var rclonePID: Int32?
    public var state: State
    /// Why the last rclone stopped or did not become ready.
    public var lastError: String?
    /// The last error rclone logged while serving (a failing backend: expired credentials, a full
    /// disk, an unreachable endpoint), and when: a job that failed through the server reports it,
    /// since restic itself only sees "404" or "500".
    public var backendError: String?
    public var backendErrorTime: Double?
    public var updated: Double

    public static func lockPath(stateDirectory: String) -> String { "\(stateDirectory)/server.lock" }
    public static func recordPath(stateDirectory: String) -> String { "\(stateDirectory)/server.json" }

    /// The record, and whether its server still holds the lock (nil record: none was written).
    public static func read(stateDirectory: String) -> (record: ServerRecord?, alive: Bool) {
        let alive = FileLock.isHeld(lockPath(stateDirectory: stateDirectory)) == true
        let record = FileManager.default.contents(atPath: recordPath(stateDirectory: stateDirectory))
            .flatMap { try? JSONDecoder().decode(ServerRecord.self, from: $0) }
        return (record, alive)
    }

    /// Writes the record atomically (temporary file and rename), mode 0600.
    public func write(stateDirectory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var copy = self
        copy.updated = Date().timeIntervalSince1970
        let data = try encoder.encode(copy)
        try writeAtomically(data, to: Self.recordPath(stateDirectory: stateDirectory))
    }

    public var whereabouts: String {
        pidNamespace == Namespaces.pid ? "PID \(pid)" : "PID \(pid) in another container (PID namespace)"
    }
}

/// start-server's record as it changes: from its own loop (rclone started, ready, stopped) and from
/// the thread reading rclone's log (backend errors). Every change is written at once, except backend
/// errors, written at most once a second (a failing backend can log hundreds of lines).
final class PublishedServerRecord: Sendable {
    private struct State {
        var record: ServerRecord
        var lastBackendWrite: Double = 0
        var pendingBackendWrite = false
    }
    private let state: Locked<State>
    private let stateDirectory: String
    private let log: Logger

    init(_ record: ServerRecord, stateDirectory: String, log: Logger) {
        state = Locked(State(record: record))
        self.stateDirectory = stateDirectory
        self.log = log
    }

    func write() throws {
        try state.withLock { try $0.record.write(stateDirectory: stateDirectory) }
    }

    func update(_ change: (inout ServerRecord) -> Void) {
        state.withLock { state in
            change(&state.record)
            do {
                try state.record.write(stateDirectory: stateDirectory)
            } catch {
                log.warning("could not update \(ServerRecord.recordPath(stateDirectory: stateDirectory)): \(CloudBackupError.from(error).description) Jobs may go to the destination directly meanwhile.")
            }
        }
    }

    func backendError(_ message: String, now: Double = Date().timeIntervalSince1970) {
        state.withLock { state in
            state.record.backendError = message
            state.record.backendErrorTime = now
            guard now - state.lastBackendWrite >= 1 else { return }
            state.lastBackendWrite = now
            try? state.record.write(stateDirectory: stateDirectory)
        }
    }
}

/// Reads rclone serve restic's log: passes every line on to ours, keeps the end of it (for the reason
/// of a failed start), and hands backend errors to the record.
final class RcloneLogWatcher: Sendable {
    private let kept = Locked(BoundedBuffer(limit: 16 * 1024, keep: .tail))
    private let published: PublishedServerRecord

    init(published: PublishedServerRecord) {
        self.published = published
    }

    var observer: LineObserver {
        LineObserver { [weak self] line in
            guard let self else { return }
            let text = String(line)
            self.kept.withLock { $0.append(text + "\n") }
            writeStandardError(text + "\n")
            if let error = Self.backendError(in: text) { self.published.backendError(error) }
        }
    }

    var text: String { kept.withLock { $0.text } }

    /// "2026/12/03 15:00:00 ERROR : config: …" (rclone), or our credential process's own error line
    /// (its stderr is rclone's): the sentence, without the timestamp.
    static func backendError(in line: String) -> String? {
        if let range = line.range(of: "cloud-backup: error: aws-credential-process: ") {
            return "the INFN credential process failed: " + line[range.upperBound...]
        }
        guard line.contains(" ERROR : ") || line.contains(" CRITICAL: ") else { return nil }
        return DestinationInspector.rcloneReason(line)
    }
}

/// Whether what answers on the job's port is this state directory's server, serving its destination.
public enum ServerIdentity: Sendable, Equatable {
    case ours(ServerRecord)
    /// Why not, as a clause: "no start-server of this state directory is running".
    case notOurs(String)

    public static func check(port: Int, destination: String, stateDirectory: String) -> ServerIdentity {
        let (found, alive) = ServerRecord.read(stateDirectory: stateDirectory)
        guard alive, let record = found else {
            return .notOurs("no start-server of this state directory (\(stateDirectory)) is running")
        }
        guard record.networkNamespace == Namespaces.network else {
            return .notOurs("the start-server of this state directory (\(record.whereabouts)) runs in another container (network namespace), so what answers on 127.0.0.1:\(port) here is something else")
        }
        guard record.port == port else {
            return .notOurs("the start-server of this state directory (\(record.whereabouts)) serves port \(record.port), not RESTIC_REST_PORT=\(port)")
        }
        guard record.destination == destination else {
            return .notOurs("the start-server of this state directory (\(record.whereabouts)) serves \(record.destination), not this job's destination \(destination) (restart the server after changing the destination)")
        }
        guard record.state == .ready else {
            return .notOurs("the start-server of this state directory (\(record.whereabouts)) is not ready\(record.lastError.map { " (\($0))" } ?? "")")
        }
        // Same PID namespace: the listener itself must be the rclone the record names.
        if record.pidNamespace == Namespaces.pid, let owner = PortOwner.find(port: port), owner.pid != record.rclonePID {
            return .notOurs("port \(port) is held by \(owner.name) (PID \(owner.pid)), not by the server's rclone (PID \(record.rclonePID.map(String.init) ?? "none"))")
        }
        return .ours(record)
    }
}
