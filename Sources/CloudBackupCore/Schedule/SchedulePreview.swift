import Foundation

/// `cloud-backup schedule`: the built-in schedule as start-server reads it, with each job's next runs
/// (this host's jitter included), so an admin can check the times before relying on them. The same
/// code start-server runs; bench/schedule-jitter drives it for a fleet of host names.
public enum SchedulePreview {
    public static let options = Command.Options(valued: ["--next", "--from"], switches: ["--json"], required: [], operands: [],
                                                synopsis: "[--next N] [--from TIME] [--json]")

    public static func run(arguments: [String], environment: [String: String], hostName: String = currentHostName(),
                           now: Date = Date()) -> Int32 {
        let log = Logger()
        let parsed: Command.Options.Parsed
        do {
            parsed = try options.parse(arguments, command: "schedule")
        } catch {
            log.error(CloudBackupError.from(error).description)
            return ExitCode.usage
        }
        let given = parsed.values["--next"]?.first
        let count = given.map { text in text.allSatisfy(\.isASCII) ? Int(text) ?? 0 : 0 } ?? 3
        guard (1...10_000).contains(count) else {
            log.error(CloudBackupError.usage("schedule: --next takes a number of runs from 1 to 10000").description)
            return ExitCode.usage
        }
        var from = now
        if let text = parsed.values["--from"]?.first {
            guard let date = parseTime(text) else {
                log.error(CloudBackupError.usage("schedule: --from \(shellQuoted(text)) is not a time: write it as 2026-12-04T02:00:00Z or 2026-12-04T02:00:00+01:00").description)
                return ExitCode.usage
            }
            from = date
        }
        let settings: ScheduleSettings
        switch ScheduleSettings.load(environment: environment, hostName: hostName) {
        case .success(let loaded): settings = loaded
        case .failure(let problem):
            log.error(problem.description)
            return problem.exitCode
        }
        let runs = settings.jobs.map { job -> (ScheduledJob, [Date]) in
            var times: [Date] = []
            var cursor = from
            while times.count < count, let next = settings.nextRun(of: job, after: cursor) {
                times.append(next)
                cursor = next
            }
            return (job, times)
        }
        if parsed.switches.contains("--json") {
            let object: [String: Any] = [
                "timeZone": settings.timeZoneName, "offsetSeconds": settings.offsetSeconds, "jitterSeconds": settings.jitterSeconds,
                "catchUp": settings.catchUp,
                "jobs": runs.map { job, times in
                    ["job": job.name, "variable": job.variable, "expression": job.expression.text, "command": job.commandArguments,
                     "next": times.map { $0.timeIntervalSince1970 }] as [String: Any]
                },
            ]
            guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return ExitCode.software }
            print(String(decoding: data, as: UTF8.self))
            return ExitCode.success
        }
        guard !settings.isEmpty else {
            print("No built-in schedule: none of \(ScheduleSettings.variables.joined(separator: ", ")) is set (start-server only serves; ofelia or cron runs the jobs).")
            return ExitCode.success
        }
        print("Built-in schedule of start-server (time zone \(settings.timeZoneName); \(settings.offsetSeconds > 0 ? "this host runs its jobs \(formatDuration(Double(settings.offsetSeconds))) after their times (SCHEDULE_JITTER_SECONDS=\(settings.jitterSeconds))" : "no jitter"); missed runs \(settings.catchUp ? "are caught up once after a start" : "are not caught up")):")
        for (job, times) in runs {
            print("  \(job.name): `cloud-backup \(job.commandArguments.map(shellQuoted).joined(separator: " "))` at \(job.variable)=\(job.expression.text)")
            for time in times { print("    \(formatScheduleTime(time, timeZone: settings.timeZone))") }
            if times.isEmpty { print("    (no run in the next eight years)") }
        }
        return ExitCode.success
    }

    static func parseTime(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text)
    }
}
