import Foundation

/// One job run as Prometheus metrics, for node_exporter's textfile collector: `<job>.prom`, written
/// to a temporary file and renamed, so the collector never reads half a file.
public struct JobMetrics: Sendable, Equatable {
    public var job: String
    public var start: Date
    public var end: Date
    public var exitCode: Int32
    public var backup: BackupStatistics?
    /// What the last drill proved (nil when it did not get as far as the snapshot).
    public var drill: DrillStatistics?
    /// When the job last succeeded (this run, or carried over from the previous file).
    public var lastSuccess: Date?

    public init(job: String, start: Date, end: Date, exitCode: Int32, backup: BackupStatistics? = nil,
                drill: DrillStatistics? = nil, lastSuccess: Date? = nil) {
        self.job = job
        self.start = start
        self.end = end
        self.exitCode = exitCode
        self.backup = backup
        self.drill = drill
        self.lastSuccess = exitCode == 0 ? end : lastSuccess
    }

    public func fileName() -> String { "\(job).prom" }

    /// The text exposition format (https://prometheus.io/docs/instrumenting/exposition_formats/).
    public func render() -> String {
        var lines: [String] = []
        let label = "{job=\"\(escapeLabelValue(job))\"}"
        func family(_ name: String, _ help: String, _ samples: [(labels: String, value: String)]) {
            lines.append("# HELP \(name) \(help)")
            lines.append("# TYPE \(name) gauge")
            for sample in samples { lines.append("\(name)\(sample.labels) \(sample.value)") }
        }
        func seconds(_ date: Date) -> String { String(format: "%.3f", date.timeIntervalSince1970) }

        family("cloud_backup_last_run_start_timestamp_seconds", "When the job's last run started (Unix time).", [(label, seconds(start))])
        family("cloud_backup_last_run_end_timestamp_seconds", "When the job's last run ended (Unix time).", [(label, seconds(end))])
        family("cloud_backup_last_run_duration_seconds", "How long the job's last run took.", [(label, String(format: "%.3f", end.timeIntervalSince(start)))])
        family("cloud_backup_last_run_exit_code", "The exit code of the job's last run (0 = success).", [(label, "\(exitCode)")])
        family("cloud_backup_last_run_success", "1 if the job's last run succeeded, else 0.", [(label, exitCode == 0 ? "1" : "0")])
        if let lastSuccess {
            family("cloud_backup_last_success_timestamp_seconds", "When the job last succeeded (Unix time).", [(label, seconds(lastSuccess))])
        }
        if let backup {
            let job = "job=\"\(escapeLabelValue(self.job))\""
            family("cloud_backup_last_snapshot_files", "Files in the last snapshot, by what changed since the previous one.", [
                ("{\(job),change=\"new\"}", "\(backup.filesNew)"),
                ("{\(job),change=\"changed\"}", "\(backup.filesChanged)"),
                ("{\(job),change=\"unmodified\"}", "\(backup.filesUnmodified)"),
            ])
            family("cloud_backup_last_snapshot_added_bytes", "Bytes the last snapshot added to the repository (before compression).", [(label, "\(backup.dataAdded)")])
            family("cloud_backup_last_snapshot_processed_bytes", "Bytes the last backup read.", [(label, "\(backup.bytesProcessed)")])
            family("cloud_backup_last_snapshot_processed_files", "Files the last backup read.", [(label, "\(backup.filesProcessed)")])
        }
        if let drill {
            let job = "job=\"\(escapeLabelValue(self.job))\""
            family("cloud_backup_last_drill_files", "Files the last drill restored, by what comparing them with the live files showed.", [
                ("{\(job),result=\"identical\"}", "\(drill.identical)"),
                ("{\(job),result=\"skipped\"}", "\(drill.skipped)"),
                ("{\(job),result=\"failed\"}", "\(drill.failed)"),
            ])
            family("cloud_backup_last_drill_restored_bytes", "Bytes the last drill restored from the repository.", [(label, "\(drill.restoredBytes)")])
            family("cloud_backup_last_drill_snapshot_timestamp_seconds", "When the snapshot the last drill restored from was taken (Unix time).", [(label, seconds(drill.snapshotTime))])
            family("cloud_backup_last_drill_snapshot_age_seconds", "How old that snapshot was when the drill ran.", [(label, String(format: "%.0f", drill.snapshotAgeSeconds))])
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Writes `<directory>/<job>.prom` atomically, keeping the previous file's last-success time.
    public func write(to directory: String) throws {
        var metrics = self
        let path = "\(directory)/\(fileName())"
        if metrics.lastSuccess == nil, let previous = try? String(contentsOfFile: path, encoding: .utf8) {
            metrics.lastSuccess = Self.lastSuccess(in: previous)
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // node_exporter runs as another user: the file must be readable by it (no secrets in here).
        try writeAtomically(Data(metrics.render().utf8), to: path, mode: 0o644)
    }

    static func lastSuccess(in text: String) -> Date? {
        for line in text.split(separator: "\n") where line.hasPrefix("cloud_backup_last_success_timestamp_seconds{") {
            if let value = line.split(separator: " ").last.flatMap({ Double($0) }) { return Date(timeIntervalSince1970: value) }
        }
        return nil
    }
}

func escapeLabelValue(_ value: String) -> String {
    value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
}

/// The drill's figures for `cloud_backup_last_drill_*`.
public struct DrillStatistics: Sendable, Equatable {
    public var identical: Int
    public var skipped: Int
    public var failed: Int
    public var restoredBytes: Int64
    public var snapshotTime: Date
    public var snapshotAgeSeconds: Double

    public init(identical: Int, skipped: Int, failed: Int, restoredBytes: Int64, snapshotTime: Date, snapshotAgeSeconds: Double) {
        self.identical = identical
        self.skipped = skipped
        self.failed = failed
        self.restoredBytes = restoredBytes
        self.snapshotTime = snapshotTime
        self.snapshotAgeSeconds = snapshotAgeSeconds
    }
}
