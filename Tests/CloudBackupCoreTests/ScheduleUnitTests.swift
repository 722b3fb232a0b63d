import Foundation
import XCTest
@testable import CloudBackupCore

/// The built-in schedule's pure parts: cron parsing and its problems, next(after:timeZone:) across
/// month ends, leap years and DST, ScheduleSettings.load, the per-host jitter and splitArguments.
/// No process, no file (but one temporary directory for schedule.json), no sleep.
final class ScheduleUnitTests: XCTestCase {
    let utc = TimeZone(identifier: "UTC")!
    let rome = TimeZone(identifier: "Europe/Rome")!

    /// "2026-01-05T02:00:00Z" (or with an offset) as a Date.
    func time(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> Date {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        guard let date = formatter.date(from: text) else {
            XCTFail("bad test time \(text)", file: file, line: line)
            return Date(timeIntervalSince1970: 0)
        }
        return date
    }

    func cron(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws -> CronExpression {
        do {
            return try CronExpression(text)
        } catch {
            XCTFail("\"\(text)\" did not parse: \(error.description)", file: file, line: line)
            throw error
        }
    }

    /// The first `count` matches strictly after `from`.
    func runs(_ text: String, from: String, count: Int, in zone: TimeZone? = nil,
              file: StaticString = #filePath, line: UInt = #line) throws -> [Date] {
        let expression = try cron(text, file: file, line: line)
        var cursor = time(from, file: file, line: line)
        var result: [Date] = []
        while result.count < count, let next = expression.next(after: cursor, timeZone: zone ?? utc) {
            XCTAssertGreaterThan(next, cursor, "\(text): next(after:) went backwards or stood still", file: file, line: line)
            result.append(next)
            cursor = next
        }
        XCTAssertEqual(result.count, count, "\(text): fewer runs than asked", file: file, line: line)
        return result
    }

    /// The matches as ISO 8601 UTC strings, easy to compare and to read in a failure.
    func runTexts(_ text: String, from: String, count: Int, in zone: TimeZone? = nil,
                  file: StaticString = #filePath, line: UInt = #line) throws -> [String] {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = utc
        return try runs(text, from: from, count: count, in: zone, file: file, line: line).map { formatter.string(from: $0) }
    }

    /// The Problem's sentence for an expression that must be refused.
    func problem(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            let expression = try CronExpression(text)
            XCTFail("\"\(text)\" parsed (\(expression)) but should be refused", file: file, line: line)
            return ""
        } catch {
            return error.description
        }
    }

    /// Wall-clock parts of `date` in `zone`.
    func wall(_ date: Date, _ zone: TimeZone) -> DateComponents {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        return calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday], from: date)
    }

    // MARK: - Parsing

    func testFiveFieldsRunAtSecondZeroAndSixFieldsPutSecondsFirst() throws {
        XCTAssertEqual(try runTexts("0 2 * * *", from: "2026-01-05T00:00:00Z", count: 2),
                       ["2026-01-05T02:00:00Z", "2026-01-06T02:00:00Z"])
        XCTAssertEqual(try runTexts("*/15 * * * *", from: "2026-01-05T00:00:10Z", count: 3),
                       ["2026-01-05T00:15:00Z", "2026-01-05T00:30:00Z", "2026-01-05T00:45:00Z"])
        // ofelia-config.ini's form: second minute hour day-of-month month day-of-week.
        XCTAssertEqual(try runTexts("30 0 2 * * *", from: "2026-01-05T00:00:00Z", count: 2),
                       ["2026-01-05T02:00:30Z", "2026-01-06T02:00:30Z"])
        XCTAssertEqual(try runTexts("*/20 * * * * *", from: "2026-01-05T00:00:00Z", count: 4),
                       ["2026-01-05T00:00:20Z", "2026-01-05T00:00:40Z", "2026-01-05T00:01:00Z", "2026-01-05T00:01:20Z"])
        // The same schedule written both ways.
        XCTAssertEqual(try runs("15 3 * * 1", from: "2026-01-01T00:00:00Z", count: 5),
                       try runs("0 15 3 * * 1", from: "2026-01-01T00:00:00Z", count: 5))
        // Surrounding spaces and tabs between fields are fine; the text is kept trimmed.
        XCTAssertEqual(try cron("  0\t2  * * *  ").text, "0\t2  * * *")
        XCTAssertEqual(try runTexts(" 0\t2 *  * * ", from: "2026-01-05T00:00:00Z", count: 1), ["2026-01-05T02:00:00Z"])
    }

    func testShortcuts() throws {
        // 2026-01-05 is a Monday.
        let from = "2026-01-05T10:20:30Z"
        XCTAssertEqual(try runTexts("@daily", from: from, count: 2), ["2026-01-06T00:00:00Z", "2026-01-07T00:00:00Z"])
        XCTAssertEqual(try runTexts("@midnight", from: from, count: 2), ["2026-01-06T00:00:00Z", "2026-01-07T00:00:00Z"])
        XCTAssertEqual(try runTexts("@hourly", from: from, count: 2), ["2026-01-05T11:00:00Z", "2026-01-05T12:00:00Z"])
        XCTAssertEqual(try runTexts("@weekly", from: from, count: 2), ["2026-01-11T00:00:00Z", "2026-01-18T00:00:00Z"]) // Sundays
        XCTAssertEqual(try runTexts("@monthly", from: from, count: 2), ["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"])
        XCTAssertEqual(try runTexts("@yearly", from: from, count: 2), ["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"])
        XCTAssertEqual(try runTexts("@annually", from: from, count: 1), ["2027-01-01T00:00:00Z"])
        // Shortcuts are not case-sensitive and keep their text as written.
        XCTAssertEqual(try runTexts("@DAILY", from: from, count: 1), ["2026-01-06T00:00:00Z"])
        XCTAssertEqual(try cron(" @Daily ").text, "@Daily")
        // In a time zone: midnight there.
        XCTAssertEqual(try runTexts("@daily", from: from, count: 1, in: rome), ["2026-01-05T23:00:00Z"])
    }

    func testEveryIsAlignedToMultiplesOfTheDurationSinceTheEpoch() throws {
        // 2026-01-01T00:00:00Z = 1_767_225_600 s, a multiple of 90 s, 15 min and 1 h 30 min.
        let midnight = 1_767_225_600.0
        let every90 = try cron("@every 90s")
        for (after, expected) in [(0.0, 90.0), (1, 90), (89.5, 90), (90, 180), (100, 180), (-0.5, 0)] {
            XCTAssertEqual(every90.next(after: Date(timeIntervalSince1970: midnight + after), timeZone: utc),
                           Date(timeIntervalSince1970: midnight + expected), "after +\(after) s")
        }
        XCTAssertEqual(try runTexts("@every 1h30m", from: "2026-01-05T00:00:01Z", count: 3),
                       ["2026-01-05T01:30:00Z", "2026-01-05T03:00:00Z", "2026-01-05T04:30:00Z"])
        XCTAssertEqual(try runTexts("@every 15m", from: "2026-01-05T10:07:00Z", count: 3),
                       ["2026-01-05T10:15:00Z", "2026-01-05T10:30:00Z", "2026-01-05T10:45:00Z"])
        XCTAssertEqual(try runTexts("@every 6h", from: "2026-01-05T07:00:00Z", count: 2),
                       ["2026-01-05T12:00:00Z", "2026-01-05T18:00:00Z"])
        // 7 minutes does not divide an hour: the times follow the epoch, not the clock.
        let seven = try runs("@every 7m", from: "2026-01-05T10:00:00Z", count: 20)
        XCTAssertTrue(seven.allSatisfy { $0.timeIntervalSince1970.truncatingRemainder(dividingBy: 420) == 0 })
        XCTAssertTrue(zip(seven, seven.dropFirst()).allSatisfy { $1.timeIntervalSince($0) == 420 })
        // Not the time zone either, nor the time the server started.
        XCTAssertEqual(try runs("@every 1h30m", from: "2026-01-05T00:00:01Z", count: 5, in: rome),
                       try runs("@every 1h30m", from: "2026-01-05T00:00:01Z", count: 5, in: utc))
        XCTAssertEqual(try runs("@every 15m", from: "2026-03-29T00:50:00Z", count: 8, in: rome).map(\.timeIntervalSince1970),
                       (0..<8).map { time("2026-03-29T01:00:00Z").timeIntervalSince1970 + Double($0) * 900 })
        XCTAssertEqual(try runTexts("@EVERY 45s", from: "2026-01-05T00:00:00Z", count: 1), ["2026-01-05T00:00:45Z"])
        // 1 h 0 min 30 s = 3630 s; 1_767_225_600 = 3630 × 486_839 + 30: the next multiple is 01:00:00.
        XCTAssertEqual(try runTexts("@every 1h0m30s", from: "2026-01-01T00:00:00Z", count: 2),
                       ["2026-01-01T01:00:00Z", "2026-01-01T02:00:30Z"])
        XCTAssertEqual(CronExpression.parseDuration("1h30m"), 5400)
        XCTAssertEqual(CronExpression.parseDuration("90s"), 90)
        XCTAssertEqual(CronExpression.parseDuration("15m"), 900)
        XCTAssertNil(CronExpression.parseDuration(""))
        XCTAssertNil(CronExpression.parseDuration("15"))
        XCTAssertNil(CronExpression.parseDuration("0s"))
        XCTAssertNil(CronExpression.parseDuration("1.5h"))
        XCTAssertNil(CronExpression.parseDuration("1d"))
        XCTAssertNil(CronExpression.parseDuration("-5m"))
    }

    func testListsRangesAndSteps() throws {
        XCTAssertEqual(try runTexts("0 1,13,22 * * *", from: "2026-01-05T02:00:00Z", count: 4),
                       ["2026-01-05T13:00:00Z", "2026-01-05T22:00:00Z", "2026-01-06T01:00:00Z", "2026-01-06T13:00:00Z"])
        XCTAssertEqual(try runTexts("0 9-11 * * *", from: "2026-01-05T10:30:00Z", count: 3),
                       ["2026-01-05T11:00:00Z", "2026-01-06T09:00:00Z", "2026-01-06T10:00:00Z"])

        /// The minutes of one hour a minute field matches.
        func minutes(_ field: String) throws -> [Int] {
            try runs("\(field) * * * *", from: "2026-01-05T09:59:59Z", count: 60).prefix { $0 < time("2026-01-05T11:00:00Z") }
                .map { wall($0, utc).minute! }
        }
        XCTAssertEqual(try minutes("*/15"), [0, 15, 30, 45])
        XCTAssertEqual(try minutes("10-50/20"), [10, 30, 50])
        XCTAssertEqual(try minutes("5/20"), [5, 25, 45])          // 5 to the field's end
        XCTAssertEqual(try minutes("58/1"), [58, 59])
        XCTAssertEqual(try minutes("1,2,30-32,*/20"), [0, 1, 2, 20, 30, 31, 32, 40])
        XCTAssertEqual(try minutes("7"), [7])
        XCTAssertEqual(try minutes("*/1").count, 60)
        XCTAssertEqual(try minutes("0-59/100"), [0])               // a step past the end: the start only

        // Hours and seconds with steps.
        XCTAssertEqual(try runTexts("0 */6 * * *", from: "2026-01-05T00:00:00Z", count: 4),
                       ["2026-01-05T06:00:00Z", "2026-01-05T12:00:00Z", "2026-01-05T18:00:00Z", "2026-01-06T00:00:00Z"])
        XCTAssertEqual(try runTexts("10/25 0 0 * * *", from: "2026-01-05T00:00:00Z", count: 3),
                       ["2026-01-05T00:00:10Z", "2026-01-05T00:00:35Z", "2026-01-06T00:00:10Z"])
        // Days of the month and months with steps.
        XCTAssertEqual(try runTexts("0 0 1/10 * *", from: "2026-01-01T00:00:00Z", count: 4),
                       ["2026-01-11T00:00:00Z", "2026-01-21T00:00:00Z", "2026-01-31T00:00:00Z", "2026-02-01T00:00:00Z"])
        XCTAssertEqual(try runTexts("0 0 1 */3 *", from: "2026-01-01T00:00:00Z", count: 4),
                       ["2026-04-01T00:00:00Z", "2026-07-01T00:00:00Z", "2026-10-01T00:00:00Z", "2027-01-01T00:00:00Z"])
    }

    func testMonthAndDayNamesAnyCase() throws {
        XCTAssertEqual(try runTexts("0 0 1 JAN,jul *", from: "2026-01-01T00:00:00Z", count: 3),
                       ["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z", "2027-07-01T00:00:00Z"])
        XCTAssertEqual(try runs("0 0 1 Feb-Apr *", from: "2026-01-01T00:00:00Z", count: 3),
                       try runs("0 0 1 2-4 *", from: "2026-01-01T00:00:00Z", count: 3))
        XCTAssertEqual(try runs("0 0 1 jan-dec/3 *", from: "2026-01-01T00:00:00Z", count: 4),
                       try runs("0 0 1 1-12/3 *", from: "2026-01-01T00:00:00Z", count: 4))
        // 2026-01-05 is a Monday.
        XCTAssertEqual(try runTexts("0 3 * * mon-fri", from: "2026-01-05T12:00:00Z", count: 5),
                       ["2026-01-06T03:00:00Z", "2026-01-07T03:00:00Z", "2026-01-08T03:00:00Z", "2026-01-09T03:00:00Z",
                        "2026-01-12T03:00:00Z"])
        XCTAssertEqual(try runTexts("0 3 * * Sat,SUN", from: "2026-01-05T12:00:00Z", count: 3),
                       ["2026-01-10T03:00:00Z", "2026-01-11T03:00:00Z", "2026-01-17T03:00:00Z"])
        for (name, weekday) in [("sun", 1), ("MON", 2), ("Tue", 3), ("wed", 4), ("thu", 5), ("FRI", 6), ("sat", 7)] {
            let next = try runs("0 0 * * \(name)", from: "2026-01-05T12:00:00Z", count: 2)
            XCTAssertEqual(next.map { wall($0, utc).weekday }, [weekday, weekday], name)
        }
    }

    func testSundayIsZeroAndSeven() throws {
        let zero = try runs("0 0 * * 0", from: "2026-01-05T00:00:00Z", count: 4)
        XCTAssertEqual(zero.map { wall($0, utc).weekday }, [1, 1, 1, 1])
        XCTAssertEqual(try runs("0 0 * * 7", from: "2026-01-05T00:00:00Z", count: 4), zero)
        XCTAssertEqual(try runs("0 0 * * SUN", from: "2026-01-05T00:00:00Z", count: 4), zero)
        // Friday to Sunday written with 7.
        XCTAssertEqual(try runTexts("0 0 * * 5-7", from: "2026-01-05T00:00:00Z", count: 4),
                       ["2026-01-09T00:00:00Z", "2026-01-10T00:00:00Z", "2026-01-11T00:00:00Z", "2026-01-16T00:00:00Z"])
        // Every day of the week, Sunday twice: still once a day.
        XCTAssertEqual(try runs("0 0 * * 0-7", from: "2026-01-05T00:00:00Z", count: 7),
                       try runs("0 0 * * *", from: "2026-01-05T00:00:00Z", count: 7))
    }

    /// `a/n` in the day-of-week field goes to Saturday, as `*` does (ofelia's robfig/cron: 0–6).
    /// Fails today: it goes to 7, so "1/2" (Monday, Wednesday, Friday) also runs on Sundays.
    func testADayOfWeekStepFromADayEndsOnSaturday() throws {
        let days = try runs("0 0 * * 1/2", from: "2026-01-05T00:00:00Z", count: 12).map { wall($0, utc).weekday! }
        XCTAssertEqual(Set(days), [2, 4, 6], "weekdays (1 = Sunday): \(days)")
        XCTAssertEqual(Set(try runs("0 0 * * 5/1", from: "2026-01-05T00:00:00Z", count: 6).map { wall($0, utc).weekday! }), [6, 7])
        // An explicit range to 7 does include Sunday.
        XCTAssertEqual(Set(try runs("0 0 * * 1-7/2", from: "2026-01-05T00:00:00Z", count: 12).map { wall($0, utc).weekday! }), [1, 2, 4, 6])
    }

    func testQuestionMarkInTheDayFields() throws {
        XCTAssertEqual(try runs("0 0 ? * MON", from: "2026-01-01T00:00:00Z", count: 5),
                       try runs("0 0 * * MON", from: "2026-01-01T00:00:00Z", count: 5))
        XCTAssertEqual(try runs("0 0 15 * ?", from: "2026-01-01T00:00:00Z", count: 5),
                       try runs("0 0 15 * *", from: "2026-01-01T00:00:00Z", count: 5))
        XCTAssertEqual(try runs("0 0 0 ? * ?", from: "2026-01-01T00:00:00Z", count: 5),
                       try runs("@daily", from: "2026-01-01T00:00:00Z", count: 5))
    }

    // MARK: - Problems

    func testProblemsSayWhatIsWrong() {
        let fieldCount = problem("0 2 * *")
        XCTAssertTrue(fieldCount.contains("expected 5 fields"), fieldCount)
        XCTAssertTrue(fieldCount.contains("got 4 fields"), fieldCount)
        XCTAssertTrue(problem("0 0 2 * * * *").contains("got 7 fields"))
        XCTAssertTrue(problem("daily").contains("got 1 field"), problem("daily"))
        XCTAssertFalse(problem("daily").contains("got 1 fields"))

        // Out of range: the field is named, with its range.
        for (text, field, value) in [("60 * * * *", "minute", "60"), ("0 24 * * *", "hour", "24"),
                                     ("0 0 32 * *", "day-of-month", "32"), ("0 0 0 * *", "day-of-month", "0"),
                                     ("0 0 * 13 *", "month", "13"), ("0 0 * 0 *", "month", "0"),
                                     ("0 0 * * 8", "day-of-week", "8"), ("60 0 2 * * *", "second", "60"),
                                     ("0 0-24 * * *", "hour", "24"), ("0 1,2,99 * * *", "hour", "99")] {
            let message = problem(text)
            XCTAssertTrue(message.contains("the \(field) field"), "\(text): \(message)")
            XCTAssertTrue(message.contains("has \(value), outside"), "\(text): \(message)")
        }
        XCTAssertTrue(problem("0 24 * * *").contains("outside 0–23"), problem("0 24 * * *"))

        // Not a number (or a name, in the fields that take names).
        let word = problem("0 x * * *")
        XCTAssertTrue(word.contains("the hour field \"x\" has \"x\", which is not a number"), word)
        XCTAssertFalse(word.contains("or a name"), word)
        XCTAssertTrue(problem("0 0 * foo *").contains("not a number or a name"), problem("0 0 * foo *"))
        XCTAssertTrue(problem("0 0 * * funday").contains("the day-of-week field"), problem("0 0 * * funday"))
        XCTAssertTrue(problem("0 0 * * MON,").contains("not a number"), problem("0 0 * * MON,"))
        XCTAssertTrue(problem("-5 * * * *").contains("not a number"), problem("-5 * * * *"))
        XCTAssertTrue(problem("+5 * * * *").contains("not a number"), problem("+5 * * * *"))
        XCTAssertTrue(problem("1-2-3 * * * *").contains("the minute field"), problem("1-2-3 * * * *"))
        XCTAssertTrue(problem("0 jan * * *").contains("the hour field"), problem("0 jan * * *")) // names only where they belong

        // Steps.
        let zeroStep = problem("*/0 * * * *")
        XCTAssertTrue(zeroStep.contains("the step \"0\""), zeroStep)
        XCTAssertTrue(zeroStep.contains("above 0"), zeroStep)
        XCTAssertTrue(problem("*/x * * * *").contains("the step \"x\""))
        XCTAssertTrue(problem("*/-1 * * * *").contains("the step \"-1\""))
        XCTAssertTrue(problem("*/ * * * *").contains("the step \"\""))
        XCTAssertTrue(problem("*/2/3 * * * *").contains("more than one '/'"))

        // A range that ends before it starts.
        let reversed = problem("50-10 * * * *")
        XCTAssertTrue(reversed.contains("the minute field"), reversed)
        XCTAssertTrue(reversed.contains("ends before it starts"), reversed)
        XCTAssertTrue(problem("0 0 * * FRI-MON").contains("ends before it starts"))

        // Shortcuts and @every.
        let shortcut = problem("@fortnightly")
        XCTAssertTrue(shortcut.contains("unknown shortcut @fortnightly"), shortcut)
        XCTAssertTrue(problem("@reboot").contains("unknown shortcut"))
        let bare = problem("@every")
        XCTAssertTrue(bare.contains("`@every` needs a duration"), bare)
        XCTAssertTrue(bare.contains("(got \"\")"), bare)
        for duration in ["10x", "0s", "15", "1.5h", "1d", "h", "5 m"] {
            let message = problem("@every \(duration)")
            XCTAssertTrue(message.contains("`@every` needs a duration"), "\(duration): \(message)")
            XCTAssertTrue(message.contains("(got \"\(duration)\")"), "\(duration): \(message)")
        }

        // Parses, but never happens.
        for text in ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 0 31 feb ?"] {
            XCTAssertTrue(problem(text).contains("matches no date"), "\(text): \(problem(text))")
        }
        // February 29 does happen.
        XCTAssertNoThrow(try CronExpression("0 0 29 2 *"))
    }

    // MARK: - next(after:timeZone:)

    func testNextInUTCAndInRome() throws {
        // Winter: Rome is UTC+1; summer: UTC+2.
        XCTAssertEqual(try runTexts("0 2 * * *", from: "2026-01-05T00:00:00Z", count: 2, in: rome),
                       ["2026-01-05T01:00:00Z", "2026-01-06T01:00:00Z"])
        XCTAssertEqual(try runTexts("0 2 * * *", from: "2026-06-30T12:00:00Z", count: 2, in: rome),
                       ["2026-07-01T00:00:00Z", "2026-07-02T00:00:00Z"])
        XCTAssertEqual(try runTexts("0 2 * * *", from: "2026-06-30T12:00:00Z", count: 1, in: utc), ["2026-07-01T02:00:00Z"])
        // The day is Rome's: 00:30 on Monday in Rome is still Sunday in UTC.
        XCTAssertEqual(try runTexts("30 0 * * MON", from: "2026-01-01T00:00:00Z", count: 2, in: rome),
                       ["2026-01-04T23:30:00Z", "2026-01-11T23:30:00Z"])
        // Every match, in Rome, is the wall-clock time asked for.
        for date in try runs("15 4 * * *", from: "2026-01-01T00:00:00Z", count: 366, in: rome) {
            let parts = wall(date, rome)
            XCTAssertEqual([parts.hour, parts.minute, parts.second], [4, 15, 0], "\(date)")
        }
    }

    func testNextIsStrictlyAfter() throws {
        let daily = try cron("0 2 * * *")
        let onTheDot = time("2026-01-05T02:00:00Z")
        XCTAssertEqual(daily.next(after: onTheDot, timeZone: utc), time("2026-01-06T02:00:00Z"))
        XCTAssertEqual(daily.next(after: onTheDot.addingTimeInterval(-0.5), timeZone: utc), onTheDot)
        XCTAssertEqual(daily.next(after: onTheDot.addingTimeInterval(-1), timeZone: utc), onTheDot)
        XCTAssertEqual(daily.next(after: onTheDot.addingTimeInterval(0.5), timeZone: utc), time("2026-01-06T02:00:00Z"))
        let everySecond = try cron("* * * * * *")
        XCTAssertEqual(everySecond.next(after: onTheDot, timeZone: utc), onTheDot.addingTimeInterval(1))
        XCTAssertEqual(everySecond.next(after: onTheDot.addingTimeInterval(0.25), timeZone: utc), onTheDot.addingTimeInterval(1))
        let everyMinute = try cron("* * * * *")
        XCTAssertEqual(everyMinute.next(after: onTheDot, timeZone: utc), onTheDot.addingTimeInterval(60))
        XCTAssertEqual(everyMinute.next(after: onTheDot.addingTimeInterval(59), timeZone: utc), onTheDot.addingTimeInterval(60))
        // In Rome, on the dot too.
        XCTAssertEqual(daily.next(after: time("2026-01-05T01:00:00Z"), timeZone: rome), time("2026-01-06T01:00:00Z"))
    }

    func testMonthEndsYearEndsAndLeapYears() throws {
        // The 31st skips the months without one.
        XCTAssertEqual(try runTexts("0 0 31 * *", from: "2026-01-31T12:00:00Z", count: 4),
                       ["2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z", "2026-08-31T00:00:00Z"])
        XCTAssertEqual(try runTexts("0 0 30 * *", from: "2026-01-30T01:00:00Z", count: 2),
                       ["2026-03-30T00:00:00Z", "2026-04-30T00:00:00Z"])
        // Into the next day, month and year.
        XCTAssertEqual(try runTexts("0 0 * * *", from: "2026-01-31T23:59:59Z", count: 1), ["2026-02-01T00:00:00Z"])
        XCTAssertEqual(try runTexts("0 0 * * *", from: "2026-02-28T12:00:00Z", count: 1), ["2026-03-01T00:00:00Z"])
        XCTAssertEqual(try runTexts("0 0 * * *", from: "2028-02-28T12:00:00Z", count: 2), ["2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z"])
        XCTAssertEqual(try runTexts("0 0 1 1 *", from: "2026-12-31T23:59:59Z", count: 1), ["2027-01-01T00:00:00Z"])
        XCTAssertEqual(try runTexts("59 59 23 31 12 *", from: "2026-12-31T23:59:58Z", count: 2),
                       ["2026-12-31T23:59:59Z", "2027-12-31T23:59:59Z"])
        // February 29: two years ahead from 2026, then every four; 2100 is not a leap year.
        XCTAssertEqual(try runTexts("0 0 29 2 *", from: "2026-01-01T00:00:00Z", count: 3),
                       ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z", "2036-02-29T00:00:00Z"])
        XCTAssertEqual(try runTexts("0 0 29 2 *", from: "2096-03-01T00:00:00Z", count: 1), ["2104-02-29T00:00:00Z"])
        XCTAssertEqual(try runTexts("0 0 29 2 *", from: "2026-01-01T00:00:00Z", count: 1, in: rome), ["2028-02-28T23:00:00Z"])
        // The 28th every year, the 29th in leap years only.
        XCTAssertEqual(try runTexts("0 12 28,29 2 *", from: "2027-01-01T00:00:00Z", count: 3),
                       ["2027-02-28T12:00:00Z", "2028-02-28T12:00:00Z", "2028-02-29T12:00:00Z"])
    }

    func testDayOfMonthOrDayOfWeekWhenBothAreRestricted() throws {
        // January 2026: Fridays 2, 9, 16, 23, 30; the 13th is a Tuesday. February 13 is a Friday.
        XCTAssertEqual(try runTexts("0 0 13 * FRI", from: "2026-01-01T00:00:00Z", count: 10),
                       ["2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z", "2026-01-13T00:00:00Z", "2026-01-16T00:00:00Z",
                        "2026-01-23T00:00:00Z", "2026-01-30T00:00:00Z", "2026-02-06T00:00:00Z", "2026-02-13T00:00:00Z",
                        "2026-02-20T00:00:00Z", "2026-02-27T00:00:00Z"])
        // Over a year: exactly the days that are a 13th or a Friday.
        let year = try runs("0 0 13 * FRI", from: "2025-12-31T23:59:59Z", count: 200).filter { $0 < time("2027-01-01T00:00:00Z") }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = utc
        var expected: [Date] = []
        var day = time("2026-01-01T00:00:00Z")
        while day < time("2027-01-01T00:00:00Z") {
            let parts = wall(day, utc)
            if parts.day == 13 || parts.weekday == 6 { expected.append(day) }
            day = calendar.date(byAdding: .day, value: 1, to: day)!
        }
        XCTAssertEqual(year, expected)
        XCTAssertEqual(expected.count, 52 + 12 - 3) // 2026: 52 Fridays, 12 thirteenths, 3 of them Fridays (Feb, Mar, Nov)

        // Only one restricted: only it counts.
        let thirteenths = try runs("0 0 13 * *", from: "2026-01-01T00:00:00Z", count: 12)
        XCTAssertTrue(thirteenths.allSatisfy { wall($0, utc).day == 13 })
        XCTAssertEqual(thirteenths.map { wall($0, utc).month! }, Array(1...12))
        let fridays = try runs("0 0 * * FRI", from: "2026-01-01T00:00:00Z", count: 52)
        XCTAssertTrue(fridays.allSatisfy { wall($0, utc).weekday == 6 })
        XCTAssertTrue(zip(fridays, fridays.dropFirst()).allSatisfy { $1.timeIntervalSince($0) == 7 * 86_400 })
        // A stepped star is a restriction (robfig/cron's rule, which ofelia uses): odd days or Mondays.
        let stepped = try runs("0 0 */2 * MON", from: "2026-01-01T00:00:00Z", count: 10)
        XCTAssertTrue(stepped.allSatisfy { wall($0, utc).day! % 2 == 1 || wall($0, utc).weekday == 2 })
        XCTAssertTrue(stepped.contains { wall($0, utc).day! % 2 == 0 }) // a Monday on an even day: Jan 12
        // A plain star with step 1 is still a star.
        XCTAssertEqual(try runs("0 0 */1 * MON", from: "2026-01-01T00:00:00Z", count: 5),
                       try runs("0 0 * * MON", from: "2026-01-01T00:00:00Z", count: 5))
    }

    func testSpringForwardInRomeRunsOnceAfterTheGap() throws {
        // 2026-03-29: at 02:00 CET (01:00 UTC) Rome's clocks jump to 03:00 CEST; 02:30 does not exist.
        // A time in the gap runs at the gap's end, 03:00 CEST = 01:00 UTC (Foundation alone would move it
        // on by the gap's length, to 03:30, and a server started at 03:10 would skip that day).
        let afterTheGap = time("2026-03-29T03:00:00+02:00")
        let daily = try runs("30 2 * * *", from: "2026-03-27T12:00:00Z", count: 4, in: rome)
        XCTAssertEqual(daily[0], time("2026-03-28T01:30:00Z")) // 02:30 CET
        XCTAssertEqual(daily[1], afterTheGap)
        XCTAssertGreaterThanOrEqual(daily[1], time("2026-03-29T01:00:00Z")) // never inside or before the gap
        XCTAssertLessThanOrEqual(daily[1], time("2026-03-29T01:30:00Z"))
        XCTAssertEqual(daily[2], time("2026-03-30T00:30:00Z")) // 02:30 CEST
        XCTAssertEqual(daily[3], time("2026-03-31T00:30:00Z"))
        // Exactly once on the day of the change (Rome's day: 2026-03-28T23:00Z ..< 2026-03-29T22:00Z).
        let that = daily.filter { $0 >= time("2026-03-28T23:00:00Z") && $0 < time("2026-03-29T22:00:00Z") }
        XCTAssertEqual(that.count, 1)
        // After that day's run: the next day, not a second run.
        XCTAssertEqual(try cron("30 2 * * *").next(after: daily[1], timeZone: rome), daily[2])

        // Every minute: minute after minute, from 01:59 CET straight to 03:00 CEST, never back.
        let minutes = try runs("* * * * *", from: "2026-03-29T00:50:00Z", count: 30, in: rome)
        XCTAssertTrue(zip(minutes, minutes.dropFirst()).allSatisfy { $1.timeIntervalSince($0) == 60 },
                      "\(minutes)")
        XCTAssertTrue(minutes.contains(time("2026-03-29T01:59:00+01:00")))
        XCTAssertTrue(minutes.contains(time("2026-03-29T03:00:00+02:00")))
        // Hourly from 01:15 to 04:15: the 02:15 of the gap runs after the gap (at 03:15 today, merged with
        // 03:15 itself; at 03:00 with the gap's-end fix), 03:15 and 04:15 once each, nothing inside the gap.
        let hourly = try runs("15 1-4 * * *", from: "2026-03-28T23:00:00Z", count: 6, in: rome)
            .filter { $0 < time("2026-03-29T22:00:00Z") }
        XCTAssertEqual(hourly.first, time("2026-03-29T01:15:00+01:00"))
        XCTAssertEqual(hourly.filter { $0 == time("2026-03-29T03:15:00+02:00") }.count, 1)
        XCTAssertEqual(hourly.last, time("2026-03-29T04:15:00+02:00"))
        XCTAssertTrue(hourly.dropFirst().allSatisfy { $0 >= time("2026-03-29T03:00:00+02:00") }, "\(hourly)")
        XCTAssertTrue(hourly.count == 3 || hourly.count == 4, "\(hourly)")
    }

    /// next(after:) must agree with itself: from any time between one day's run and the next day's, it
    /// gives the next day's run. Fails today for a time in a spring-forward gap: 02:30 becomes 03:30 CEST,
    /// but asked at 03:10 CEST (after the gap, before 03:30) it answers the following day, so a
    /// start-server started between 03:00 and 03:30 that night skips the run (and no catch-up, since the
    /// missed time is after the start).
    func testNextAgreesWithItselfAcrossTheSpringForwardGap() throws {
        for text in ["30 2 * * *", "0 2 * * *", "59 2 * * *", "*/20 2 * * *"] {
            let expression = try cron(text)
            var previous = time("2026-03-28T12:00:00Z")
            // Each run of the night, then from every minute before it: the same answer.
            let night = time("2026-03-29T00:00:00Z")..<time("2026-03-29T02:00:00Z")
            for _ in 0..<3 {
                guard let run = expression.next(after: previous, timeZone: rome) else { return XCTFail(text) }
                var query = previous
                while query < run {
                    let answer = expression.next(after: query, timeZone: rome)
                    if answer != run {
                        XCTFail("\(text): asked at \(query), next(after:) says \(answer.map { "\($0)" } ?? "never"); "
                                + "asked at \(previous) it said \(run)")
                        break
                    }
                    query = query.addingTimeInterval(night.contains(query) ? 60 : 3600)
                }
                previous = run
            }
        }
    }

    func testFallBackInRomeRunsOnceAndNeverGoesBack() throws {
        // 2026-10-25: at 03:00 CEST (01:00 UTC) Rome's clocks go back to 02:00 CET; 02:30 happens twice.
        let daily = try runs("30 2 * * *", from: "2026-10-23T12:00:00Z", count: 4, in: rome)
        XCTAssertEqual(daily[0], time("2026-10-24T00:30:00Z")) // 02:30 CEST
        XCTAssertEqual(daily[1], time("2026-10-25T00:30:00Z")) // the first 02:30, CEST
        XCTAssertEqual(daily[2], time("2026-10-26T01:30:00Z")) // 02:30 CET
        XCTAssertEqual(daily[3], time("2026-10-27T01:30:00Z"))
        // Exactly once on the day of the change (Rome's day: 2026-10-24T22:00Z ..< 2026-10-25T23:00Z).
        XCTAssertEqual(daily.filter { $0 >= time("2026-10-24T22:00:00Z") && $0 < time("2026-10-25T23:00:00Z") }.count, 1)
        // Asked during the repeated hour, after the first 02:30 passed: not again that day.
        XCTAssertEqual(try cron("30 2 * * *").next(after: time("2026-10-25T01:10:00Z"), timeZone: rome), daily[2])
        XCTAssertEqual(try cron("30 2 * * *").next(after: daily[1], timeZone: rome), daily[2])

        // Every minute: strictly increasing through the change; the repeated hour runs once.
        let minutes = try runs("* * * * *", from: "2026-10-24T23:50:00Z", count: 200, in: rome)
        XCTAssertTrue(zip(minutes, minutes.dropFirst()).allSatisfy { $1 > $0 })
        let labels = minutes.map { date -> String in
            let parts = wall(date, rome)
            return String(format: "%02d:%02d", parts.hour!, parts.minute!)
        }
        XCTAssertEqual(labels.count, Set(labels).count, "a wall-clock minute ran twice")
        XCTAssertTrue(minutes.contains(time("2026-10-25T02:59:00+02:00")))
        XCTAssertTrue(minutes.contains(time("2026-10-25T03:00:00+01:00")))
        // Every second across the change: never backwards either.
        let seconds = try runs("* * * * * *", from: "2026-10-25T00:59:50Z", count: 20, in: rome)
        XCTAssertTrue(zip(seconds, seconds.dropFirst()).allSatisfy { $1 > $0 })
        // Asked in the middle of the repeated hour, every minute goes on from there (not back to the first pass).
        let during = try cron("* * * * *").next(after: time("2026-10-25T01:30:00Z"), timeZone: rome)
        XCTAssertNotNil(during)
        XCTAssertGreaterThan(during!, time("2026-10-25T01:30:00Z"))
    }

    func testAYearOfDailyRunsInRomeIsOneADay() throws {
        let year = try runs("30 2 * * *", from: "2025-12-31T12:00:00Z", count: 365, in: rome)
        let days = year.map { date -> String in
            let parts = wall(date, rome)
            return "\(parts.year!)-\(parts.month!)-\(parts.day!)"
        }
        XCTAssertEqual(Set(days).count, 365)
        XCTAssertEqual(wall(year.last!, rome).month, 12)
        XCTAssertEqual(wall(year.last!, rome).day, 31)
    }

    // MARK: - ScheduleSettings.load

    func load(_ environment: [String: String], hostName: String = "host-a",
              file: StaticString = #filePath, line: UInt = #line) -> ScheduleSettings? {
        switch ScheduleSettings.load(environment: environment, hostName: hostName) {
        case .success(let settings): return settings
        case .failure(let error):
            XCTFail("unexpected failure: \(error.description)", file: file, line: line)
            return nil
        }
    }

    func problems(_ environment: [String: String], file: StaticString = #filePath, line: UInt = #line) -> [String] {
        switch ScheduleSettings.load(environment: environment, hostName: "host-a") {
        case .success(let settings):
            XCTFail("expected a failure, got \(settings)", file: file, line: line)
            return []
        case .failure(let error):
            XCTAssertEqual(error.exitCode, ExitCode.configuration, file: file, line: line)
            guard case .configuration(let problems) = error else {
                XCTFail("expected a configuration error, got \(error)", file: file, line: line)
                return []
            }
            return problems
        }
    }

    func testNoScheduleVariableMeansNoSchedule() throws {
        let settings = try XCTUnwrap(load(["PATH": "/usr/bin", "HOME": "/root", "BACKUP_PATHS": "/backup", "FORGET_ARGS": "'"]))
        XCTAssertTrue(settings.isEmpty)
        XCTAssertEqual(settings.offsetSeconds, 0)
        XCTAssertEqual(settings.jitterSeconds, 0)
        XCTAssertTrue(settings.catchUp)
        XCTAssertTrue(try XCTUnwrap(load([:])).isEmpty)
        // A bad TZ does not matter without a schedule (start-server only serves).
        XCTAssertTrue(try XCTUnwrap(load(["TZ": "Not/AZone"])).isEmpty)
        XCTAssertEqual(ScheduleSettings.variables,
                       ["BACKUP_SCHEDULE", "FORGET_SCHEDULE", "CHECK_SCHEDULE", "DRILL_SCHEDULE", "TOKEN_CHECK_SCHEDULE"])
    }

    func testEveryJobWithItsArguments() throws {
        let settings = try XCTUnwrap(load([
            "BACKUP_SCHEDULE": "0 2 * * *", "BACKUP_PATHS": "/backup:/etc/ /srv/data",
            "FORGET_SCHEDULE": "0 3 * * SUN", "CHECK_SCHEDULE": "@monthly", "DRILL_SCHEDULE": "0 4 1 */3 *",
            "TOKEN_CHECK_SCHEDULE": "@daily", "TZ": "UTC",
        ]))
        XCTAssertEqual(settings.jobs.map(\.name), ["backup", "forget", "check", "drill", "check-refresh-token"])
        XCTAssertEqual(settings.jobs.map(\.variable), ScheduleSettings.variables)
        XCTAssertEqual(settings.jobs[0].commandArguments, ["backup", "/backup", "/etc", "/srv/data"])
        XCTAssertEqual(settings.jobs[1].commandArguments, ["forget", "--keep-within", "1m", "--prune"])
        XCTAssertEqual(settings.jobs[2].commandArguments, ["check", "--read-data-subset", "5%"])
        XCTAssertEqual(settings.jobs[3].commandArguments, ["drill"])
        XCTAssertEqual(settings.jobs[4].commandArguments, ["check-refresh-token"])
        XCTAssertEqual(settings.jobs.map(\.usesRepository), [true, true, true, true, false])
        XCTAssertEqual(settings.jobs[1].expression, try cron("0 3 * * SUN"))
        // TZ=UTC: Foundation on Linux calls it GMT; the log and `schedule` say it as the user wrote it.
        XCTAssertEqual(settings.timeZone.secondsFromGMT(for: time("2026-07-01T00:00:00Z")), 0)
        XCTAssertTrue(["UTC", "GMT"].contains(settings.timeZone.identifier), settings.timeZone.identifier)
        XCTAssertEqual(settings.timeZoneName, "UTC")
        XCTAssertTrue(settings.describe(settings.jobs[0]).hasPrefix("BACKUP_SCHEDULE=0 2 * * * (UTC)"), settings.describe(settings.jobs[0]))
    }

    func testBackupPathsAreRequiredAndAbsolute() {
        let missing = problems(["BACKUP_SCHEDULE": "0 2 * * *"])
        XCTAssertEqual(missing.count, 1, "\(missing)")
        XCTAssertTrue(missing.first?.contains("BACKUP_PATHS") == true, "\(missing)")
        let relative = problems(["BACKUP_SCHEDULE": "0 2 * * *", "BACKUP_PATHS": "backup:/etc"])
        XCTAssertEqual(relative.count, 1, "\(relative)")
        XCTAssertTrue(relative.first?.hasPrefix("BACKUP_PATHS: backup is not an absolute path") == true, "\(relative)")
        let two = problems(["BACKUP_SCHEDULE": "0 2 * * *", "BACKUP_PATHS": "a b"])
        XCTAssertTrue(two.first?.contains("a, b are not absolute paths") == true, "\(two)")
        // Only the backup job needs it.
        XCTAssertNotNil(load(["FORGET_SCHEDULE": "0 3 * * *"]))
    }

    func testForgetAndCheckArguments() throws {
        let quoted = try XCTUnwrap(load(["FORGET_SCHEDULE": "@daily", "FORGET_ARGS": "--keep-tag 'a b' --keep-daily 7 --prune",
                                         "CHECK_SCHEDULE": "@weekly", "CHECK_ARGS": "--read-data-subset \"1/10\""]))
        XCTAssertEqual(quoted.jobs[0].arguments, ["--keep-tag", "a b", "--keep-daily", "7", "--prune"])
        XCTAssertEqual(quoted.jobs[1].arguments, ["--read-data-subset", "1/10"])
        let unclosed = problems(["FORGET_SCHEDULE": "@daily", "FORGET_ARGS": "--keep-tag 'a b"])
        XCTAssertEqual(unclosed.count, 1, "\(unclosed)")
        XCTAssertTrue(unclosed.first?.hasPrefix("FORGET_ARGS=--keep-tag 'a b: ") == true, "\(unclosed)")
        XCTAssertTrue(unclosed.first?.contains("quote") == true, "\(unclosed)")
        XCTAssertTrue(problems(["CHECK_SCHEDULE": "@daily", "CHECK_ARGS": "\"x"]).first?.hasPrefix("CHECK_ARGS=") == true)
        // An unclosed quote in the arguments of a job that is not scheduled is not read.
        XCTAssertNotNil(load(["BACKUP_SCHEDULE": "@daily", "BACKUP_PATHS": "/b", "FORGET_ARGS": "'"]))
    }

    func testABadExpressionNamesItsVariable() {
        let bad = problems(["CHECK_SCHEDULE": "0 25 * * *"])
        XCTAssertEqual(bad.count, 1, "\(bad)")
        XCTAssertTrue(bad.first?.hasPrefix("CHECK_SCHEDULE=0 25 * * *: the hour field") == true, "\(bad)")
        XCTAssertTrue(bad.first?.hasSuffix(".") == true, "\(bad)")
    }

    func testJitterSecondsMustBeANumberOfSecondsUpToADay() throws {
        let base = ["BACKUP_SCHEDULE": "0 2 * * *", "BACKUP_PATHS": "/backup"]
        for value in ["-1", "abc", "86401", "1.5", " 60", "1e3", "99999999999999999999999"] {
            let found = problems(base.merging(["SCHEDULE_JITTER_SECONDS": value]) { $1 })
            XCTAssertEqual(found.count, 1, "\(value): \(found)")
            XCTAssertTrue(found.first?.hasPrefix("SCHEDULE_JITTER_SECONDS=\(value): ") == true, "\(value): \(found)")
        }
        XCTAssertEqual(try XCTUnwrap(load(base.merging(["SCHEDULE_JITTER_SECONDS": "86400"]) { $1 })).jitterSeconds, 86_400)
        XCTAssertEqual(try XCTUnwrap(load(base.merging(["SCHEDULE_JITTER_SECONDS": "0"]) { $1 })).offsetSeconds, 0)
        // Checked even without a schedule (a typo shows before the schedule is turned on).
        XCTAssertEqual(problems(["SCHEDULE_JITTER_SECONDS": "abc"]).count, 1)
    }

    func testCatchUp() throws {
        let base = ["BACKUP_SCHEDULE": "0 2 * * *", "BACKUP_PATHS": "/backup"]
        XCTAssertTrue(try XCTUnwrap(load(base)).catchUp)
        for value in ["false", "FALSE", "0", "no", "off"] {
            XCTAssertFalse(try XCTUnwrap(load(base.merging(["SCHEDULE_CATCH_UP": value]) { $1 })).catchUp, value)
        }
        XCTAssertTrue(try XCTUnwrap(load(base.merging(["SCHEDULE_CATCH_UP": "true"]) { $1 })).catchUp)
        XCTAssertTrue(problems(base.merging(["SCHEDULE_CATCH_UP": "maybe"]) { $1 }).first?.hasPrefix("SCHEDULE_CATCH_UP=maybe") == true)
    }

    func testTimeZoneFromTZ() throws {
        let base = ["BACKUP_SCHEDULE": "0 2 * * *", "BACKUP_PATHS": "/backup"]
        let rome = try XCTUnwrap(load(base.merging(["TZ": "Europe/Rome"]) { $1 }))
        XCTAssertEqual(rome.timeZone.identifier, "Europe/Rome")
        XCTAssertEqual(rome.nextRun(of: rome.jobs[0], after: time("2026-01-05T00:00:00Z")), time("2026-01-05T01:00:00Z"))
        XCTAssertEqual(rome.nextRun(of: rome.jobs[0], after: time("2026-07-05T00:00:00Z")), time("2026-07-06T00:00:00Z"))
        XCTAssertTrue(rome.describe(rome.jobs[0]).contains("(Europe/Rome)"))
        // glibc's ":zone" form.
        let colon = try XCTUnwrap(load(base.merging(["TZ": ":Europe/Rome"]) { $1 }))
        XCTAssertEqual(colon.timeZone.identifier, "Europe/Rome")
        XCTAssertEqual(colon.nextRun(of: colon.jobs[0], after: time("2026-01-05T00:00:00Z")), time("2026-01-05T01:00:00Z"))
        XCTAssertEqual(try XCTUnwrap(load(base.merging(["TZ": "UTC"]) { $1 })).nextRun(of: rome.jobs[0], after: time("2026-01-05T00:00:00Z")),
                       time("2026-01-05T02:00:00Z"))
        // A zone the system does not know, with a schedule: refused, naming TZ.
        let bad = problems(base.merging(["TZ": "Mars/Olympus_Mons"]) { $1 })
        XCTAssertEqual(bad.count, 1, "\(bad)")
        XCTAssertTrue(bad.first?.hasPrefix("TZ=Mars/Olympus_Mons: ") == true, "\(bad)")
    }

    func testEmptyValuesCountAsUnset() throws {
        XCTAssertTrue(try XCTUnwrap(load(["BACKUP_SCHEDULE": "", "FORGET_SCHEDULE": "", "CHECK_SCHEDULE": "", "DRILL_SCHEDULE": "",
                                          "TOKEN_CHECK_SCHEDULE": ""])).isEmpty)
        let settings = try XCTUnwrap(load(["FORGET_SCHEDULE": "@daily", "FORGET_ARGS": "", "SCHEDULE_JITTER_SECONDS": "",
                                           "SCHEDULE_CATCH_UP": "", "TZ": "", "RESTIC_HOST": "", "BACKUP_PATHS": ""],
                                          hostName: "host-a"))
        XCTAssertEqual(settings.jobs.map(\.commandArguments), [["forget", "--keep-within", "1m", "--prune"]])
        XCTAssertEqual(settings.jitterSeconds, 0)
        XCTAssertTrue(settings.catchUp)
        XCTAssertEqual(settings.timeZone, TimeZone.current)
        // An empty BACKUP_PATHS is a missing one.
        XCTAssertTrue(problems(["BACKUP_SCHEDULE": "@daily", "BACKUP_PATHS": ""]).first?.contains("BACKUP_PATHS is not") == true)
        // An empty RESTIC_HOST falls back to the host name.
        let jittered = try XCTUnwrap(load(["FORGET_SCHEDULE": "@daily", "SCHEDULE_JITTER_SECONDS": "3600", "RESTIC_HOST": ""],
                                          hostName: "host-a"))
        XCTAssertEqual(jittered.offsetSeconds, ScheduleSettings.jitterOffset(host: "host-a", jitterSeconds: 3600))
    }

    func testSeveralProblemsAtOnce() {
        let found = problems([
            "BACKUP_SCHEDULE": "0 2 * * *",                       // no BACKUP_PATHS
            "FORGET_SCHEDULE": "@daily", "FORGET_ARGS": "'a",    // unclosed quote
            "CHECK_SCHEDULE": "0 0 31 2 *",                      // never
            "SCHEDULE_JITTER_SECONDS": "-1",
            "SCHEDULE_CATCH_UP": "perhaps",
            "TZ": "Nowhere/Atlantis",
        ])
        let variables = found.map { $0.prefix { $0 != "=" && $0 != ":" && $0 != " " } }
        XCTAssertEqual(Set(variables), ["BACKUP_SCHEDULE", "FORGET_ARGS", "CHECK_SCHEDULE", "SCHEDULE_JITTER_SECONDS",
                                        "SCHEDULE_CATCH_UP", "TZ"], "\(found)")
        XCTAssertEqual(found.count, 6, "\(found)")
    }

    /// "Every problem at once": a bad TZ is reported with a bad expression, not only after it is fixed.
    /// Fails today: the TZ check runs only when some job parsed (`!jobs.isEmpty`).
    func testABadTimeZoneIsReportedWithABadExpression() {
        let found = problems(["BACKUP_SCHEDULE": "0 25 * * *", "BACKUP_PATHS": "/backup", "TZ": "Nowhere/Atlantis"])
        XCTAssertEqual(found.count, 2, "\(found)")
        XCTAssertTrue(found.contains { $0.hasPrefix("BACKUP_SCHEDULE=0 25 * * *: ") }, "\(found)")
        XCTAssertTrue(found.contains { $0.hasPrefix("TZ=Nowhere/Atlantis: ") }, "\(found)")
        let unclosed = problems(["FORGET_SCHEDULE": "@daily", "FORGET_ARGS": "'a", "TZ": "Nowhere/Atlantis"])
        XCTAssertEqual(unclosed.count, 2, "\(unclosed)")
    }

    // MARK: - Jitter

    func testJitterOffsetIsBoundedStableAndPerHost() {
        XCTAssertEqual(ScheduleSettings.jitterOffset(host: "vm-0001.cloud.infn.it", jitterSeconds: 0), 0)
        XCTAssertEqual(ScheduleSettings.jitterOffset(host: "", jitterSeconds: 0), 0)
        XCTAssertEqual(ScheduleSettings.jitterOffset(host: "vm-0001.cloud.infn.it", jitterSeconds: 1), 0)
        // Pinned: SHA-256("cloud-backup schedule jitter\n" + host), first 8 bytes big-endian, modulo the jitter.
        // A change here moves every host's backup time at upgrade.
        XCTAssertEqual(ScheduleSettings.jitterOffset(host: "vm-0001.cloud.infn.it", jitterSeconds: 3600), 2283)
        XCTAssertEqual(ScheduleSettings.jitterOffset(host: "vm-0001.cloud.infn.it", jitterSeconds: 86_400), 67_083)
        XCTAssertEqual(ScheduleSettings.jitterOffset(host: "backup-host", jitterSeconds: 3600), 2113)
        var offsets = Set<Int>()
        for index in 1...500 {
            let host = String(format: "vm-%04d.cloud.infn.it", index)
            for jitter in [2, 7, 60, 3600, 86_400] {
                let offset = ScheduleSettings.jitterOffset(host: host, jitterSeconds: jitter)
                XCTAssertTrue((0..<jitter).contains(offset), "\(host), \(jitter): \(offset)")
                XCTAssertEqual(ScheduleSettings.jitterOffset(host: host, jitterSeconds: jitter), offset)
            }
            offsets.insert(ScheduleSettings.jitterOffset(host: host, jitterSeconds: 3600))
        }
        // Spread over the hour, not bunched (500 draws into 3600 values: ~470 distinct expected).
        XCTAssertGreaterThan(offsets.count, 400)
        XCTAssertLessThan(offsets.min()!, 300)
        XCTAssertGreaterThan(offsets.max()!, 3300)
    }

    func testResticHostWinsOverTheHostName() throws {
        let base = ["BACKUP_SCHEDULE": "0 2 * * *", "BACKUP_PATHS": "/backup", "SCHEDULE_JITTER_SECONDS": "3600"]
        let a = ScheduleSettings.jitterOffset(host: "a", jitterSeconds: 3600)
        let b = ScheduleSettings.jitterOffset(host: "b", jitterSeconds: 3600)
        XCTAssertNotEqual(a, b)
        XCTAssertEqual(try XCTUnwrap(load(base, hostName: "b")).offsetSeconds, b)
        XCTAssertEqual(try XCTUnwrap(load(base.merging(["RESTIC_HOST": "a"]) { $1 }, hostName: "b")).offsetSeconds, a)
        XCTAssertEqual(try XCTUnwrap(load(base.merging(["RESTIC_HOST": "a"]) { $1 }, hostName: "c")).offsetSeconds, a)
        XCTAssertEqual(try XCTUnwrap(load(base, hostName: "b")).offsetSeconds, try XCTUnwrap(load(base, hostName: "b")).offsetSeconds)
    }

    func testNextRunIsTheCronTimePlusTheSameOffsetEveryDay() throws {
        let settings = try XCTUnwrap(load(["BACKUP_SCHEDULE": "0 2 * * *", "BACKUP_PATHS": "/backup", "SCHEDULE_JITTER_SECONDS": "3600",
                                           "TZ": "Europe/Rome", "RESTIC_HOST": "vm-0001.cloud.infn.it"]))
        XCTAssertEqual(settings.offsetSeconds, 2283)
        XCTAssertTrue(settings.describe(settings.jobs[0]).contains("later on this host"), settings.describe(settings.jobs[0]))
        let job = settings.jobs[0]
        var cursor = time("2026-01-05T00:00:00Z")
        var cronCursor = cursor
        for day in 0..<30 {
            let run = try XCTUnwrap(settings.nextRun(of: job, after: cursor))
            let cronTime = try XCTUnwrap(job.expression.next(after: cronCursor, timeZone: settings.timeZone))
            XCTAssertEqual(run.timeIntervalSince(cronTime), 2283, "day \(day)")
            XCTAssertEqual(cronTime, time("2026-01-05T01:00:00Z").addingTimeInterval(Double(day) * 86_400), "day \(day)")
            let parts = wall(run, rome)
            XCTAssertEqual([parts.hour, parts.minute, parts.second], [2, 38, 3], "day \(day)") // 02:00 + 2283 s
            cursor = run
            cronCursor = cronTime
        }
        // Between the cron time and this host's time: today's run is still to come.
        XCTAssertEqual(settings.nextRun(of: job, after: time("2026-01-05T01:30:00Z")), time("2026-01-05T01:38:03Z"))
        XCTAssertEqual(settings.nextRun(of: job, after: time("2026-01-05T01:38:02Z")), time("2026-01-05T01:38:03Z"))
        // On this host's time exactly: tomorrow's.
        XCTAssertEqual(settings.nextRun(of: job, after: time("2026-01-05T01:38:03Z")), time("2026-01-06T01:38:03Z"))
        // No jitter: the cron time itself.
        let plain = try XCTUnwrap(load(["BACKUP_SCHEDULE": "0 2 * * *", "BACKUP_PATHS": "/backup", "TZ": "Europe/Rome",
                                        "RESTIC_HOST": "vm-0001.cloud.infn.it"]))
        XCTAssertEqual(plain.nextRun(of: plain.jobs[0], after: time("2026-01-05T00:00:00Z")), time("2026-01-05T01:00:00Z"))
    }

    // MARK: - splitArguments

    func testSplitArguments() {
        XCTAssertEqual(splitArguments("--keep-within 1m --prune"), ["--keep-within", "1m", "--prune"])
        XCTAssertEqual(splitArguments("  a   b  "), ["a", "b"])
        XCTAssertEqual(splitArguments("\ta\t\tb\t"), ["a", "b"])
        XCTAssertEqual(splitArguments("a\nb"), ["a", "b"])
        XCTAssertEqual(splitArguments("--keep-tag 'a b'"), ["--keep-tag", "a b"])
        XCTAssertEqual(splitArguments("--keep-tag \"a b\""), ["--keep-tag", "a b"])
        XCTAssertEqual(splitArguments("\"it's\" 'say \"hi\"'"), ["it's", "say \"hi\""])
        XCTAssertEqual(splitArguments("x'y z'w"), ["xy zw"])
        XCTAssertEqual(splitArguments("--tag=''"), ["--tag="])
        XCTAssertEqual(splitArguments("''"), [""])
        XCTAssertEqual(splitArguments("\"\""), [""])
        XCTAssertEqual(splitArguments("a '' b"), ["a", "", "b"])
        XCTAssertEqual(splitArguments("'a\tb'"), ["a\tb"])
        XCTAssertEqual(splitArguments(""), [])
        XCTAssertEqual(splitArguments("   "), [])
        XCTAssertNil(splitArguments("'"))
        XCTAssertNil(splitArguments("--keep-tag 'a b"))
        XCTAssertNil(splitArguments("\"a"))
        XCTAssertNil(splitArguments("'a\" b"))
    }

    // MARK: - schedule.json and `schedule --from`

    func testScheduleRecordRoundTrips() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("schedule-unit-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        XCTAssertNil(ScheduleRecord.read(stateDirectory: directory))
        var record = ScheduleRecord()
        var job = ScheduleRecord.JobRecord(expression: "0 2 * * *", since: Date(timeIntervalSince1970: 1_767_225_600))
        job.nextRun = Date(timeIntervalSince1970: 1_767_232_800)
        job.lastExitCode = 3
        job.lastTrigger = "catch-up"
        job.skippedRuns = 2
        record.jobs["backup"] = job
        try record.write(stateDirectory: directory)
        XCTAssertEqual(ScheduleRecord.read(stateDirectory: directory), record)
        XCTAssertEqual(ScheduleRecord.path(stateDirectory: directory), "\(directory)/schedule.json")
    }

    func testPreviewTimes() {
        XCTAssertEqual(SchedulePreview.parseTime("2026-01-05T00:00:00Z"), time("2026-01-05T00:00:00Z"))
        XCTAssertEqual(SchedulePreview.parseTime("2026-01-05T02:00:00+01:00"), time("2026-01-05T01:00:00Z"))
        XCTAssertNil(SchedulePreview.parseTime("2026-01-05"))
        XCTAssertNil(SchedulePreview.parseTime("tomorrow"))
    }
}
