import Foundation

/// One job of the built-in schedule: which subcommand, with which arguments, when.
public struct ScheduledJob: Sendable, Equatable {
    /// The subcommand, which is also the job's name in logs, `status` and schedule.json.
    public var name: String
    /// The variable holding the expression (BACKUP_SCHEDULE…), for messages.
    public var variable: String
    public var expression: CronExpression
    public var arguments: [String]
    /// Jobs that use the repository run one at a time (a job due while another runs waits for it).
    public var usesRepository: Bool

    /// The full argv after the binary: `backup /backup`, `forget --keep-within 1m --prune`, …
    public var commandArguments: [String] { [name] + arguments }
}

/// The built-in schedule of `start-server`, read from the environment (docs/design.md, "Built-in
/// schedule"). No *_SCHEDULE variable set: no schedule, and start-server serves as before.
public struct ScheduleSettings: Sendable, Equatable {
    public var jobs: [ScheduledJob]
    /// Every job of this host runs this many seconds after its time (0 ..< SCHEDULE_JITTER_SECONDS),
    /// derived from the host name so it is the same every day and on every restart.
    public var offsetSeconds: Int
    public var jitterSeconds: Int
    /// Run a job once soon after start when a scheduled time passed without a successful run.
    public var catchUp: Bool
    public var timeZone: TimeZone
    /// The zone as the user named it (TZ=UTC: Foundation on Linux calls that zone "GMT").
    public var timeZoneName: String

    /// (variable, subcommand, arguments variable, default arguments, uses the repository)
    static let definitions: [(variable: String, name: String, argumentsVariable: String?, defaultArguments: String?, usesRepository: Bool)] = [
        ("BACKUP_SCHEDULE", "backup", "BACKUP_PATHS", nil, true),
        ("FORGET_SCHEDULE", "forget", "FORGET_ARGS", "--keep-within 1m --prune", true),
        ("CHECK_SCHEDULE", "check", "CHECK_ARGS", "--read-data-subset 5%", true),
        ("DRILL_SCHEDULE", "drill", nil, nil, true),
        ("TOKEN_CHECK_SCHEDULE", "check-refresh-token", nil, nil, false),
    ]

    public static let variables = definitions.map(\.variable)

    public var isEmpty: Bool { jobs.isEmpty }

    /// Every problem at once, each naming its variable (exit 78 at start).
    public static func load(environment rawEnvironment: [String: String], hostName: String) -> Result<ScheduleSettings, CloudBackupError> {
        let environment = rawEnvironment.filter { !$0.value.isEmpty }
        var problems: [String] = []
        var jobs: [ScheduledJob] = []
        for definition in definitions {
            guard let text = environment[definition.variable] else { continue }
            let expression: CronExpression
            do {
                expression = try CronExpression(text)
            } catch {
                problems.append("\(definition.variable)=\(text): \(error.description).")
                continue
            }
            var arguments: [String] = []
            if let argumentsVariable = definition.argumentsVariable {
                if argumentsVariable == "BACKUP_PATHS" {
                    let (paths, relative) = PathCoverage.parse(environment["BACKUP_PATHS"] ?? "")
                    if !relative.isEmpty {
                        problems.append("BACKUP_PATHS: \(relative.joined(separator: ", ")) \(relative.count == 1 ? "is not an absolute path" : "are not absolute paths"): list the absolute paths to back up, separated by ':' or spaces, e.g. /backup or /srv/data:/etc.")
                    } else if paths.isEmpty {
                        problems.append("BACKUP_SCHEDULE is set but BACKUP_PATHS is not: set it to the absolute paths the scheduled backup saves, separated by ':' or spaces (the image's default is /backup).")
                    }
                    arguments = paths
                } else {
                    let text = environment[argumentsVariable] ?? definition.defaultArguments ?? ""
                    guard let words = splitArguments(text) else {
                        problems.append("\(argumentsVariable)=\(text): a quote is not closed.")
                        continue
                    }
                    arguments = words
                }
            }
            jobs.append(ScheduledJob(name: definition.name, variable: definition.variable, expression: expression,
                                     arguments: arguments, usesRepository: definition.usesRepository))
        }
        let jitter = ConfigurationLoader.integer("SCHEDULE_JITTER_SECONDS", in: environment, default: 0, range: 0...86_400,
                                                 meaning: "a number of seconds from 0 to 86400", problems: &problems)
        let catchUp = ConfigurationLoader.boolean("SCHEDULE_CATCH_UP", in: environment, default: true, problems: &problems)
        var timeZone = TimeZone.current
        var timeZoneName = timeZone.identifier
        if let name = environment["TZ"] {
            // TZ=":Europe/Rome" (glibc's form) names the same zone as TZ="Europe/Rome".
            let identifier = name.hasPrefix(":") ? String(name.dropFirst()) : name
            if let zone = TimeZone(identifier: identifier) {
                timeZone = zone
                timeZoneName = identifier
            } else if definitions.contains(where: { environment[$0.variable] != nil }) {
                problems.append("TZ=\(name): not a time zone this system knows (e.g. Europe/Rome, UTC): the schedule's times would be wrong. Fix TZ or unset it to use /etc/localtime.")
            }
        }
        if !problems.isEmpty { return .failure(.configuration(problems)) }
        let host = environment["RESTIC_HOST"] ?? hostName
        return .success(ScheduleSettings(jobs: jobs, offsetSeconds: jitterOffset(host: host, jitterSeconds: jitter),
                                         jitterSeconds: jitter, catchUp: catchUp, timeZone: timeZone, timeZoneName: timeZoneName))
    }

    /// This host's delay: a hash of its name (RESTIC_HOST, else the hostname) onto 0 ..< jitter. A hash
    /// rather than a random draw, so the delay survives restarts and the period stays regular; spread
    /// over a fleet as evenly as independent draws are (bench/schedule-jitter).
    public static func jitterOffset(host: String, jitterSeconds: Int) -> Int {
        guard jitterSeconds > 0 else { return 0 }
        var hash = SHA256()
        hash.update(Data("cloud-backup schedule jitter\n\(host)".utf8))
        let digest = hash.finalize()
        let number = digest.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return Int(number % UInt64(jitterSeconds))
    }

    /// The job's first time strictly after `date`, delay included.
    public func nextRun(of job: ScheduledJob, after date: Date) -> Date? {
        let offset = Double(offsetSeconds)
        return job.expression.next(after: date.addingTimeInterval(-offset), timeZone: timeZone)?.addingTimeInterval(offset)
    }

    /// "at 0 2 * * * (Europe/Rome), 37 min 12 s later on this host"
    public func describe(_ job: ScheduledJob) -> String {
        var text = "\(job.variable)=\(job.expression.text) (\(timeZoneName))"
        if offsetSeconds > 0 { text += ", \(formatDuration(Double(offsetSeconds))) later on this host (SCHEDULE_JITTER_SECONDS)" }
        return text
    }
}

/// Words of FORGET_ARGS / CHECK_ARGS: split at spaces, as a shell would without expansions; '…' and
/// "…" keep spaces inside a word. Nil when a quote is not closed.
public func splitArguments(_ text: String) -> [String]? {
    var words: [String] = []
    var current = ""
    var inWord = false
    var quote: Character?
    for character in text {
        if let open = quote {
            if character == open { quote = nil } else { current.append(character) }
            continue
        }
        if character == "'" || character == "\"" {
            quote = character
            inWord = true
        } else if character.isWhitespace {
            if inWord { words.append(current); current = ""; inWord = false }
        } else {
            current.append(character)
            inWord = true
        }
    }
    guard quote == nil else { return nil }
    if inWord { words.append(current) }
    return words
}
