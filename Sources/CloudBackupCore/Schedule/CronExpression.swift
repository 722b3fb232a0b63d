import Foundation

/// A schedule in cron syntax, as ofelia and cron write it (docs/design.md, "Built-in schedule"):
/// - 5 fields, `minute hour day-of-month month day-of-week` (cron; the job runs at second 0);
/// - 6 fields, seconds first, `second minute hour day-of-month month day-of-week` (ofelia-config.ini);
/// - `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`;
/// - `@every DURATION` (ofelia's, e.g. `@every 6h`, `@every 1h30m`, `@every 45s`): at every multiple
///   of the duration since 1970-01-01 00:00 UTC, so the times do not depend on when the server started.
///
/// Each field: `*` (or `?` in the day fields), a number, `a-b`, a list `a,b,c`, a step `*/n`, `a-b/n`
/// or `a/n` (a to the field's end); months JAN–DEC and days SUN–SAT by name, Sunday as 0 or 7.
/// When both day fields are restricted, either may match (cron's and ofelia's rule).
/// Times are wall-clock times in the given time zone: on a spring-forward night a time that does not
/// exist runs at the end of the gap (03:00 for 02:30); on a fall-back night a time that happens twice runs once.
public struct CronExpression: Sendable, Equatable, CustomStringConvertible {
    /// What the user wrote (trimmed).
    public let text: String
    private let rule: Rule

    private enum Rule: Sendable, Equatable {
        case calendar(Fields)
        case every(seconds: Int)
    }

    /// Each field as a bit set: bit n set = value n matches.
    struct Fields: Sendable, Equatable {
        var seconds: UInt64, minutes: UInt64, hours: UInt64, daysOfMonth: UInt64, months: UInt64, daysOfWeek: UInt64
        var daysOfMonthIsStar: Bool, daysOfWeekIsStar: Bool
    }

    public var description: String { text }

    /// The problem with an expression, said as a sentence that completes "BACKUP_SCHEDULE=…: ".
    public struct Problem: Error, Equatable, CustomStringConvertible {
        public var description: String
    }

    static let shortcuts: [String: String] = [
        "@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *",
        "@weekly": "0 0 0 * * 0", "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *", "@hourly": "0 0 * * * *",
    ]

    public init(_ text: String) throws(Problem) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        self.text = trimmed
        let lowered = trimmed.lowercased()
        if lowered.hasPrefix("@every") {
            let duration = String(trimmed.dropFirst("@every".count)).trimmingCharacters(in: .whitespaces)
            guard let seconds = CronExpression.parseDuration(duration) else {
                throw Problem(description: "`@every` needs a duration of whole seconds, minutes or hours such as 30s, 15m, 6h or 1h30m (got \"\(duration)\")")
            }
            rule = .every(seconds: seconds)
            return
        }
        var words = trimmed.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        if lowered.hasPrefix("@") {
            guard let expansion = CronExpression.shortcuts[lowered] else {
                throw Problem(description: "unknown shortcut \(trimmed): use @yearly, @monthly, @weekly, @daily, @hourly, @every DURATION, or cron fields")
            }
            words = expansion.split(separator: " ").map(String.init)
        }
        switch words.count {
        case 5: words.insert("0", at: 0)
        case 6: break
        default:
            throw Problem(description: "expected 5 fields (minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\"), 6 with seconds first as in ofelia-config.ini (\"0 0 2 * * *\"), or a shortcut such as @daily; got \(words.count) field\(words.count == 1 ? "" : "s")")
        }
        let names = ["second", "minute", "hour", "day-of-month", "month", "day-of-week"]
        let ranges = [0...59, 0...59, 0...23, 1...31, 1...12, 0...7]
        var sets: [UInt64] = []
        var stars: [Bool] = []
        for index in 0..<6 {
            let (set, star) = try CronExpression.parseField(words[index], name: names[index], range: ranges[index],
                                                           aliases: index == 4 ? CronExpression.monthNames : index == 5 ? CronExpression.dayNames : [:])
            sets.append(set)
            stars.append(star)
        }
        // Sunday is 0 or 7.
        if sets[5] & (1 << 7) != 0 { sets[5] = (sets[5] | 1) & ~(1 << 7) }
        rule = .calendar(Fields(seconds: sets[0], minutes: sets[1], hours: sets[2], daysOfMonth: sets[3], months: sets[4], daysOfWeek: sets[5],
                                daysOfMonthIsStar: stars[3], daysOfWeekIsStar: stars[5]))
        // "0 0 30 2 *" parses but never happens: say so now rather than never run.
        let probe = Date(timeIntervalSince1970: 1_767_225_600) // 2026-01-01 00:00 UTC
        if next(after: probe, timeZone: TimeZone(identifier: "UTC")!) == nil {
            throw Problem(description: "matches no date (check the day of the month against the month)")
        }
    }

    static let monthNames = ["jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12]
    static let dayNames = ["sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6]

    /// One field into a bit set, and whether it is an unrestricted `*`/`?` (for the day-field rule).
    private static func parseField(_ field: String, name: String, range: ClosedRange<Int>,
                                   aliases: [String: Int]) throws(Problem) -> (UInt64, Bool) {
        func value(_ text: Substring) throws(Problem) -> Int {
            if let alias = aliases[text.lowercased()] { return alias }
            guard !text.isEmpty, text.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int(text) else {
                throw Problem(description: "the \(name) field \"\(field)\" has \"\(text)\", which is not a number\(aliases.isEmpty ? "" : " or a name")")
            }
            guard range.contains(number) else {
                throw Problem(description: "the \(name) field \"\(field)\" has \(number), outside \(range.lowerBound)–\(range.upperBound)")
            }
            return number
        }
        var set: UInt64 = 0
        var star = false
        for part in field.split(separator: ",", omittingEmptySubsequences: false) {
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2 else { throw Problem(description: "the \(name) field \"\(field)\" has more than one '/' in \"\(part)\"") }
            var step = 1
            if pieces.count == 2 {
                guard let number = Int(pieces[1]), number > 0, pieces[1].allSatisfy({ $0.isASCII && $0.isNumber }) else {
                    throw Problem(description: "the \(name) field \"\(field)\" has the step \"\(pieces[1])\": expected a whole number above 0")
                }
                step = number
            }
            let base = pieces[0]
            var low: Int, high: Int
            if base == "*" || base == "?" {
                low = range.lowerBound
                high = range == 0...7 ? 6 : range.upperBound
                if step == 1 { star = true }
            } else if let dash = base.firstIndex(of: "-") {
                low = try value(base[..<dash])
                high = try value(base[base.index(after: dash)...])
                guard low <= high else { throw Problem(description: "the \(name) field \"\(field)\" has the range \(base), which ends before it starts") }
            } else {
                low = try value(base)
                // `a/n` runs to the field's end; for days of the week that is Saturday (6), as `*` does.
                high = pieces.count == 2 ? (range == 0...7 ? 6 : range.upperBound) : low
            }
            for number in stride(from: low, through: high, by: step) { set |= 1 << UInt64(number) }
        }
        return (set, star)
    }

    /// "1h30m", "15m", "45s", "6h": whole seconds, at least 1.
    static func parseDuration(_ text: String) -> Int? {
        var total = 0, number: Int?
        var sawUnit = false
        for character in text {
            if let digit = character.wholeNumberValue, character.isASCII {
                number = (number ?? 0) * 10 + digit
                if number! > 10_000_000 { return nil }
                continue
            }
            guard let value = number else { return nil }
            switch character {
            case "h": total += value * 3600
            case "m": total += value * 60
            case "s": total += value
            default: return nil
            }
            number = nil
            sawUnit = true
        }
        guard sawUnit, number == nil, total > 0 else { return nil }
        return total
    }

    /// The first time strictly after `date` that the expression matches, in `timeZone`'s wall clock;
    /// nil when there is none in the next eight years (an expression such as "0 0 29 2 1" can wait
    /// that long; one that never matches is refused at parse time).
    public func next(after date: Date, timeZone: TimeZone) -> Date? {
        switch rule {
        case .every(let seconds):
            let now = date.timeIntervalSince1970
            return Date(timeIntervalSince1970: (floor(now / Double(seconds)) + 1) * Double(seconds))
        case .calendar(let fields):
            return Self.next(fields, after: date, timeZone: timeZone)
        }
    }

    /// Steps a naive wall-clock time forward field by field (no Calendar arithmetic, which is slow and
    /// DST-dependent), converting to an instant only for a full match.
    private static func next(_ fields: Fields, after date: Date, timeZone: TimeZone) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let start = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        guard var time = WallTime(start) else { return nil }
        time.addSecond()
        let lastYear = time.year + 8
        func matches(_ set: UInt64, _ value: Int) -> Bool { set & (1 << UInt64(value)) != 0 }
        while time.year <= lastYear {
            if !matches(fields.months, time.month) { time.nextMonth(); continue }
            let dayOfMonth = matches(fields.daysOfMonth, time.day)
            let dayOfWeek = matches(fields.daysOfWeek, time.weekday)
            let dayMatches = fields.daysOfMonthIsStar || fields.daysOfWeekIsStar ? dayOfMonth && dayOfWeek : dayOfMonth || dayOfWeek
            if !dayMatches { time.nextDay(); continue }
            if !matches(fields.hours, time.hour) { time.nextHour(); continue }
            if !matches(fields.minutes, time.minute) { time.nextMinute(); continue }
            if !matches(fields.seconds, time.second) { time.addSecond(); continue }
            let components = DateComponents(year: time.year, month: time.month, day: time.day, hour: time.hour, minute: time.minute, second: time.second)
            // A wall-clock time inside a fall-back repeat converts to its first instant, which can be
            // at or before `date`: step on. A time inside a spring-forward gap does not exist: Foundation
            // moves it later by the gap's length (02:30 → 03:30); it runs at the gap's end (03:00)
            // instead, so that a server started inside the gap's shadow (03:10) still runs it that day.
            if var instant = calendar.date(from: components) {
                let back = calendar.dateComponents([.hour, .minute, .second], from: instant)
                if (back.hour, back.minute, back.second) != (time.hour, time.minute, time.second),
                   let end = timeZone.nextDaylightSavingTimeTransition(after: instant.addingTimeInterval(-4 * 3600)), end <= instant {
                    instant = end
                }
                if instant > date { return instant }
            }
            time.addSecond()
        }
        return nil
    }
}

/// A proleptic Gregorian wall-clock time, stepped with integer arithmetic.
private struct WallTime {
    var year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int

    init?(_ components: DateComponents) {
        guard let year = components.year, let month = components.month, let day = components.day,
              let hour = components.hour, let minute = components.minute, let second = components.second else { return nil }
        (self.year, self.month, self.day, self.hour, self.minute, self.second) = (year, month, day, hour, minute, second)
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// 0 = Sunday (Sakamoto's method).
    var weekday: Int {
        let offsets = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4]
        let y = month < 3 ? year - 1 : year
        return (y + y / 4 - y / 100 + y / 400 + offsets[month - 1] + day) % 7
    }

    mutating func nextMonth() {
        (day, hour, minute, second) = (1, 0, 0, 0)
        month += 1
        if month > 12 { month = 1; year += 1 }
    }
    mutating func nextDay() {
        (hour, minute, second) = (0, 0, 0)
        day += 1
        if day > Self.daysIn(month: month, year: year) { day = 1; month += 1; if month > 12 { month = 1; year += 1 } }
    }
    mutating func nextHour() {
        (minute, second) = (0, 0)
        hour += 1
        if hour > 23 { nextDay() }
    }
    mutating func nextMinute() {
        second = 0
        minute += 1
        if minute > 59 { nextHour() }
    }
    mutating func addSecond() {
        second += 1
        if second > 59 { nextMinute() }
    }
}
