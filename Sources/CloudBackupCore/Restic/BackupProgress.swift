import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The numbers of a finished backup, exact (from restic's `--json` summary).
public struct BackupStatistics: Sendable, Equatable {
    public var snapshotID: String
    public var filesNew: Int64
    public var filesChanged: Int64
    public var filesUnmodified: Int64
    public var dirsNew: Int64
    public var dirsChanged: Int64
    public var dirsUnmodified: Int64
    public var dataAdded: Int64
    /// restic 0.17+: the added data after compression.
    public var dataAddedPacked: Int64?
    public var filesProcessed: Int64
    public var bytesProcessed: Int64
    public var durationSeconds: Double

    /// Reads one `{"message_type":"summary",…}` line.
    public static func parse(jsonLine line: Substring) -> BackupStatistics? {
        guard line.hasPrefix("{"), line.contains("\"summary\""),
              let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              object["message_type"] as? String == "summary" else { return nil }
        func number(_ key: String) -> Int64 { (object[key] as? NSNumber)?.int64Value ?? 0 }
        return BackupStatistics(
            snapshotID: object["snapshot_id"] as? String ?? "",
            filesNew: number("files_new"), filesChanged: number("files_changed"), filesUnmodified: number("files_unmodified"),
            dirsNew: number("dirs_new"), dirsChanged: number("dirs_changed"), dirsUnmodified: number("dirs_unmodified"),
            dataAdded: number("data_added"), dataAddedPacked: (object["data_added_packed"] as? NSNumber)?.int64Value,
            filesProcessed: number("total_files_processed"), bytesProcessed: number("total_bytes_processed"),
            durationSeconds: (object["total_duration"] as? NSNumber)?.doubleValue ?? 0)
    }

    /// The lines restic itself prints at the end of a backup, so logs read the same in both modes.
    public var readableLines: [String] {
        let added = dataAddedPacked.map { "\(formatBytes(dataAdded)) (\(formatBytes($0)) stored)" } ?? formatBytes(dataAdded)
        return [
            "Files:       \(pad(filesNew)) new, \(pad(filesChanged)) changed, \(pad(filesUnmodified)) unmodified",
            "Dirs:        \(pad(dirsNew)) new, \(pad(dirsChanged)) changed, \(pad(dirsUnmodified)) unmodified",
            "Added to the repository: \(added)",
            "processed \(filesProcessed) files, \(formatBytes(bytesProcessed)) in \(clock(durationSeconds))",
            "snapshot \(snapshotID.prefix(8)) saved",
        ]
    }

    private func pad(_ value: Int64) -> String {
        let text = "\(value)"
        return String(repeating: " ", count: max(0, 5 - text.count)) + text
    }
}

/// "1:02" or "1:02:03", as restic prints durations.
func clock(_ seconds: Double) -> String {
    let total = Int(seconds.rounded())
    let (hours, minutes, rest) = (total / 3600, total % 3600 / 60, total % 60)
    let twoDigits = { (value: Int) in value < 10 ? "0\(value)" : "\(value)" }
    return hours > 0 ? "\(hours):\(twoDigits(minutes)):\(twoDigits(rest))" : "\(minutes):\(twoDigits(rest))"
}

/// Turns `restic backup --json` into what a log reader wants: a progress line every `interval`
/// seconds, errors as sentences, and restic's usual summary at the end. Used when stdout is not a
/// terminal (ofelia, Docker logs); on a terminal restic draws its own progress.
/// Called from two reader threads at once and read by the job's thread: its state sits behind a lock.
public final class BackupProgressReporter: Sendable {
    private let interval: Double
    private let now: @Sendable () -> Date
    private let writeOut: @Sendable (String) -> Void
    private let writeError: @Sendable (String) -> Void
    private let missingRepository = MissingRepositoryLines()

    private struct State {
        var lastReport: Date
        var shown = BoundedBuffer(limit: 64 * 1024, keep: .tail)
        var errors = BoundedBuffer(limit: 64 * 1024, keep: .tail)
        var statistics: BackupStatistics?
    }
    private let state: Locked<State>

    init(interval: Double, now: @escaping @Sendable () -> Date = { Date() },
                writeOut: @escaping @Sendable (String) -> Void = { text in var copy = text; copy.withUTF8 { writeFully(STDOUT_FILENO, $0.baseAddress!, $0.count) } },
                writeError: @escaping @Sendable (String) -> Void = { text in var copy = text; copy.withUTF8 { writeFully(STDERR_FILENO, $0.baseAddress!, $0.count) } }) {
        self.interval = interval
        self.now = now
        self.writeOut = writeOut
        self.writeError = writeError
        self.state = Locked(State(lastReport: now()))
    }

    // The observers hold the reporter weakly: a grandchild that inherited restic's pipes can write
    // after the job has finished with the reporter, and its lines must then go nowhere, not to freed
    // memory. (The job keeps the reporter until it has read the results.)
    public var standardOutput: LineObserver { LineObserver { [weak self] line in self?.handleOutput(line) } }
    public var standardError: LineObserver { LineObserver { [weak self] line in self?.handleError(line) } }

    /// What was shown on stdout (the end of it), for the ping body.
    public var shownOutput: String { state.withLock { $0.shown.text } }
    /// restic's stderr as it came (the end of it), for classifying the outcome.
    public var errorOutput: String { state.withLock { $0.errors.text } }
    public var summary: BackupStatistics? { state.withLock { $0.statistics } }

    private func show(_ line: String) {
        state.withLock { $0.shown.append(line + "\n") }
        writeOut(line + "\n")
    }

    /// True at most once per interval: the caller then prints a progress line.
    private func progressIsDue() -> Bool {
        let current = now()
        return state.withLock { state in
            guard current.timeIntervalSince(state.lastReport) >= interval else { return false }
            state.lastReport = current
            return true
        }
    }

    func handleOutput(_ line: Substring) {
        // restic prints status lines many times a second: decide cheaply whether one is due before
        // paying for JSON parsing.
        if line.hasPrefix("{\"message_type\":\"status\"") {
            guard progressIsDue(), let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return }
            show(Self.progressLine(object))
            return
        }
        guard line.hasPrefix("{"), let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let type = object["message_type"] as? String else {
            if let text = ResticMessages.readable(line) { show(text) }
            return
        }
        switch type {
        case "status":
            // (A status line whose keys come in another order than restic's usual.)
            if progressIsDue() { show(Self.progressLine(object)) }
        case "summary":
            if let statistics = BackupStatistics.parse(jsonLine: line) {
                state.withLock { $0.statistics = statistics }
                statistics.readableLines.forEach(show)
            }
        case "verbose_status":
            // --verbose: one line per file, as restic prints it in text mode.
            let action = object["action"] as? String ?? ""
            let item = object["item"] as? String ?? ""
            show("\(action.padding(toLength: 10, withPad: " ", startingAt: 0))\(item)")
        default:
            break
        }
    }

    func handleError(_ line: Substring) {
        // Sentences, not restic's JSON (`{"message_type":"error",…}`) or terminal control sequences.
        guard let text = ResticMessages.readable(line) else { return }
        state.withLock { $0.errors.append(text + "\n") }
        if missingRepository.shouldShow(text) { writeError(text + "\n") }
    }

    static func progressLine(_ status: [String: Any]) -> String {
        func number(_ key: String) -> Double { (status[key] as? NSNumber)?.doubleValue ?? 0 }
        let percent = number("percent_done") * 100
        let bytesDone = number("bytes_done"), totalBytes = number("total_bytes")
        let filesDone = Int(number("files_done")), totalFiles = Int(number("total_files"))
        let elapsed = number("seconds_elapsed")
        var parts = [String(format: "progress: %.1f%% done", percent),
                     "\(formatBytes(Int64(bytesDone))) of \(formatBytes(Int64(totalBytes)))",
                     "\(filesDone) of \(totalFiles) files"]
        if elapsed > 0 { parts.append("\(formatBytes(Int64(bytesDone / elapsed)))/s") }
        if let remaining = (status["seconds_remaining"] as? NSNumber)?.doubleValue, remaining > 0 {
            parts.append("ETA \(clock(remaining))")
        }
        parts.append("elapsed \(clock(elapsed))")
        return parts.joined(separator: ", ")
    }
}
