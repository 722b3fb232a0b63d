import Foundation

/// The facts restic prints at the end of a backup, read from its text output (0.14 and 0.17+ wording)
/// or from its `--json` summary line.
public struct BackupSummary: Sendable, Equatable {
    public var snapshotID: String?
    public var filesNew: Int?
    public var filesChanged: Int?
    public var filesUnmodified: Int?
    public var dataAdded: String?
    public var processed: String?

    public init(snapshotID: String? = nil, filesNew: Int? = nil, filesChanged: Int? = nil, filesUnmodified: Int? = nil,
                dataAdded: String? = nil, processed: String? = nil) {
        self.snapshotID = snapshotID
        self.filesNew = filesNew
        self.filesChanged = filesChanged
        self.filesUnmodified = filesUnmodified
        self.dataAdded = dataAdded
        self.processed = processed
    }

    public var isEmpty: Bool { self == BackupSummary() }

    /// One line for the ping body and the log.
    public var oneLine: String {
        var parts: [String] = []
        if let snapshotID { parts.append("snapshot \(snapshotID) saved") }
        if let filesNew, let filesChanged, let filesUnmodified {
            parts.append("files: \(filesNew) new, \(filesChanged) changed, \(filesUnmodified) unmodified")
        }
        if let dataAdded { parts.append("added \(dataAdded)") }
        if let processed { parts.append(processed) }
        return parts.joined(separator: "; ")
    }

    public static func parse(_ output: String) -> BackupSummary {
        var summary = BackupSummary()
        for rawLine in output.split(separator: "\n") {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("{") {
                if let json = parseJSONSummary(line) { return json }
                continue
            }
            if line.hasPrefix("snapshot ") && line.hasSuffix(" saved") {
                summary.snapshotID = line.split(separator: " ").dropFirst().first.map(String.init)
            } else if line.hasPrefix("Files:") {
                let numbers = line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
                if numbers.count >= 3 {
                    summary.filesNew = numbers[0]
                    summary.filesChanged = numbers[1]
                    summary.filesUnmodified = numbers[2]
                }
            } else if line.hasPrefix("Added to the repo") {
                // 0.14: "Added to the repo: 1.234 MiB"; 0.17+: "Added to the repository: 1.2 MiB (0.9 MiB stored)"
                if let colon = line.firstIndex(of: ":") {
                    summary.dataAdded = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                }
            } else if line.hasPrefix("processed ") {
                summary.processed = line
            }
        }
        return summary
    }

    /// restic's JSON summary line, read by the one parser of it (`BackupStatistics`).
    static func parseJSONSummary(_ line: String) -> BackupSummary? {
        BackupStatistics.parse(jsonLine: Substring(line)).map(BackupSummary.init)
    }

    init(_ statistics: BackupStatistics) {
        self.init(snapshotID: statistics.snapshotID.isEmpty ? nil : String(statistics.snapshotID.prefix(8)),
                  filesNew: Int(statistics.filesNew), filesChanged: Int(statistics.filesChanged), filesUnmodified: Int(statistics.filesUnmodified),
                  dataAdded: formatBytes(statistics.dataAdded),
                  processed: "processed \(statistics.filesProcessed) files, \(formatBytes(statistics.bytesProcessed)) in \(String(format: "%.1f", statistics.durationSeconds)) s")
    }
}

/// Bytes the way restic prints them (binary units, three decimals).
public func formatBytes(_ bytes: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.3f", value) + " " + units[unit]
}
