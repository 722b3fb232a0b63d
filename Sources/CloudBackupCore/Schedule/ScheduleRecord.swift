import Foundation

/// What the built-in schedule remembers between runs of start-server, in
/// `$CLOUD_BACKUP_STATE_DIR/schedule.json` (one writer: the start-server holding server.lock). It is how
/// a missed run is recognised after a restart, and what `status` shows.
public struct ScheduleRecord: Codable, Sendable, Equatable {
    public var jobs: [String: JobRecord] = [:]

    public struct JobRecord: Codable, Sendable, Equatable {
        /// The expression it was scheduled with.
        public var expression: String
        /// When a server first scheduled this job: scheduled times before it were never promised, so a
        /// new installation does not "catch up" on them.
        public var since: Date
        public var nextRun: Date?
        public var lastStart: Date?
        public var lastEnd: Date?
        public var lastExitCode: Int32?
        /// "scheduled" or "catch-up".
        public var lastTrigger: String?
        /// The start of the last run that ended with exit code 0.
        public var lastSuccess: Date?
        /// PID of the run in progress (in the server's PID namespace), nil when none.
        public var runningPID: Int32?
        /// Scheduled times passed while the previous run was still going (not started twice).
        public var skippedRuns: Int = 0

        public init(expression: String, since: Date) {
            self.expression = expression
            self.since = since
        }
    }

    public static func path(stateDirectory: String) -> String { "\(stateDirectory)/schedule.json" }

    public static func read(stateDirectory: String) -> ScheduleRecord? {
        guard let data = FileManager.default.contents(atPath: path(stateDirectory: stateDirectory)) else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .secondsSince1970
        return try? decoder.decode(ScheduleRecord.self, from: data)
    }

    public func write(stateDirectory: String) throws {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .secondsSince1970
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writeAtomically(try encoder.encode(self), to: ScheduleRecord.path(stateDirectory: stateDirectory))
    }
}

/// "2026-12-04 02:37:12 +01:00" in the schedule's zone: what the log and `status` say.
func formatScheduleTime(_ date: Date, timeZone: TimeZone) -> String {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = timeZone
    formatter.dateFormat = "yyyy-MM-dd HH:mm:ss xxx"
    return formatter.string(from: date)
}
