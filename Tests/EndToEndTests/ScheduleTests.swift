import Foundation
import XCTest
@testable import CloudBackupCore

/// The built-in schedule of `start-server`, with real restic and rclone and second-level (6-field)
/// expressions: jobs run at their times, one repository job at a time and never twice at once, a stop
/// mid-job leaves no lock, a missed run is caught up once, the jitter is bounded and stable.
final class ScheduleTests: SandboxTestCase {
    /// The scheduler's own lines, in order: ("starting", job) and ("ended", job); a run that failed
    /// ends with a warning ("cloud-backup: warning: schedule: forget ended (exit code 1…").
    private func events(_ log: String) -> [(String, String)] {
        log.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("cloud-backup: schedule: ") || line.hasPrefix("cloud-backup: warning: schedule: "),
                  let range = line.range(of: "schedule: ") else { return nil }
            let rest = line[range.upperBound...]
            if rest.hasPrefix("starting ") { return ("starting", String(rest.dropFirst("starting ".count).prefix { $0 != " " })) }
            let words = rest.split(separator: " ", maxSplits: 2)
            if words.count >= 2 && words[1] == "ended" { return ("ended", String(words[0])) }
            return nil
        }
    }

    /// The seconds of each "due HH:MM:SS" of `job`'s start lines.
    private func dueSeconds(_ log: String, job: String) -> [Int] {
        log.split(separator: "\n").compactMap { line -> Int? in
            guard line.contains("schedule: starting \(job) (due "), let due = line.range(of: "due ") else { return nil }
            // "due 2026-12-03 23:58:06 +00:00, PID …"
            let time = line[due.upperBound...].split(separator: " ").dropFirst().first ?? ""
            return Int(time.split(separator: ":").last ?? "")
        }
    }

    func testJobsRunAtTheirTimesOneRepositoryJobAtATimeAndNeverTwice() throws {
        try sandbox.writeData(files: 3)
        // Slow pings (1.5 s each) make every backup last over 3 s, longer than its 2-s period.
        let pings = try PingRecorder(in: sandbox, arguments: ["--delay", "1.5"])
        let (server, log) = try sandbox.startServer([
            "TZ": "UTC",
            "BACKUP_SCHEDULE": "*/2 * * * * *", "BACKUP_PATHS": sandbox.data, "BACKUP_CHECK_URL": pings.url(),
            "FORGET_SCHEDULE": "1/4 * * * * *", "FORGET_ARGS": "--keep-last 100",
            "TOKEN_CHECK_SCHEDULE": "*/3 * * * * *",
        ])
        try waitFor("two backups and a forget to end", seconds: 60) {
            let ended = self.events(self.sandbox.readLog(log)).filter { $0.0 == "ended" }.map(\.1)
            return ended.filter { $0 == "backup" }.count >= 2 && ended.contains("forget")
        }
        let status = try sandbox.run(["status"], ["TZ": "UTC", "BACKUP_SCHEDULE": "*/2 * * * * *", "BACKUP_PATHS": sandbox.data,
                                                  "FORGET_SCHEDULE": "1/4 * * * * *", "TOKEN_CHECK_SCHEDULE": "*/3 * * * * *"])
        server.send(SIGTERM)
        XCTAssertEqual(waitForExit(server, seconds: 30)?.status, .exited(0))
        let text = sandbox.readLog(log)

        // Never two repository jobs at once, never a job twice at once.
        var running: Set<String> = []
        for (event, job) in events(text) {
            if event == "starting" {
                XCTAssertFalse(running.contains(job), "\(job) started twice:\n\(text)")
                if job != "check-refresh-token" {
                    XCTAssertTrue(running.subtracting(["check-refresh-token"]).isEmpty, "\(job) started while \(running) ran:\n\(text)")
                }
                running.insert(job)
            } else {
                running.remove(job)
            }
        }
        // At their times: every backup due at an even second, every forget at 1, 5, 9… (second mod 4 = 1).
        let backups = dueSeconds(text, job: "backup")
        XCTAssertGreaterThanOrEqual(backups.count, 2, text)
        XCTAssertTrue(backups.allSatisfy { $0 % 2 == 0 }, "\(backups)")
        XCTAssertTrue(dueSeconds(text, job: "forget").allSatisfy { $0 % 4 == 1 }, text)
        XCTAssertTrue(text.contains("schedule: check-refresh-token ended (exit code 0"), text)
        // The times that came while a backup ran were not started twice, and the next start ping says so.
        XCTAssertTrue(text.contains("still going: not started twice"), text)
        let starts = pings.pings.filter { $0.path.hasSuffix("/start") }
        XCTAssertTrue(starts.contains { $0.body.contains("not started twice") }, pings.pings.map(\.body).joined(separator: "\n"))
        // Each run is the real job: its snapshot is there.
        let succeeded = text.components(separatedBy: "schedule: backup ended (exit code 0").count - 1
        XCTAssertEqual(try sandbox.snapshotIDs().count, succeeded)
        let record = try XCTUnwrap(ScheduleRecord.read(stateDirectory: "\(sandbox.root)/state"))
        XCTAssertGreaterThan(record.jobs["backup"]?.skippedRuns ?? 0, 0)
        XCTAssertNil(record.jobs["backup"]?.runningPID)
        // status showed each job's next run and last result.
        XCTAssertTrue(status.standardOutput.contains("backup at BACKUP_SCHEDULE=*/2 * * * * *: next run "), status.standardOutput)
        XCTAssertTrue(status.standardOutput.contains("forget at FORGET_SCHEDULE=1/4 * * * * *: next run "), status.standardOutput)
        XCTAssertTrue(status.standardOutput.range(of: "(last run [^;]+ succeeded|running since)", options: .regularExpression) != nil, status.standardOutput)
        XCTAssertEqual(sandbox.locks(), [])
    }

    func testAStopMidJobStopsTheJobCleanlyThenTheServerAndLeavesNoLock() throws {
        try sandbox.writeData(files: 2, megabytes: 120)
        let (server, log) = try sandbox.startServer(["TZ": "UTC", "BACKUP_SCHEDULE": "*/2 * * * * *", "BACKUP_PATHS": sandbox.data])
        try waitFor("a scheduled backup's lock", seconds: 30) { !self.sandbox.locks().isEmpty }
        // restic 0.14 cannot remove a lock it is still creating when SIGINT comes (its own race; the
        // next job removes such a lock): stop it once the lock is its own.
        Thread.sleep(forTimeInterval: 0.5)
        let rclone = sandbox.childPIDs(of: server.pid, named: "rclone")
        server.send(SIGTERM)
        XCTAssertEqual(waitForExit(server, seconds: 30)?.status, .exited(0), sandbox.readLog(log))
        let text = sandbox.readLog(log)
        XCTAssertTrue(text.contains("stopping the schedule and its running jobs, then the REST server"), text)
        XCTAssertTrue(text.contains("schedule: stopping backup"), text)
        XCTAssertTrue(text.contains("backup interrupted: stopped on request"), text)
        XCTAssertTrue(text.contains("schedule: backup ended (exit code 130"), text)
        // The job ended before the server: its last line comes before the server's.
        let jobEnd = try XCTUnwrap(text.range(of: "schedule: backup ended (exit code 130"))
        let serverEnd = try XCTUnwrap(text.range(of: "REST server stopped"))
        XCTAssertLessThan(jobEnd.lowerBound, serverEnd.lowerBound)
        XCTAssertEqual(sandbox.locks(), [], "restic removed its lock\n\(text)")
        XCTAssertEqual(try sandbox.restic(["check"]).status, .exited(0))
        for pid in rclone { XCTAssertFalse(FileManager.default.fileExists(atPath: "/proc/\(pid)"), "rclone stopped") }
        XCTAssertEqual(ScheduleRecord.read(stateDirectory: "\(sandbox.root)/state")?.jobs["backup"]?.lastExitCode, 130)
    }

    func testAMissedRunIsCaughtUpOnceAfterAStartUnlessTurnedOff() throws {
        try sandbox.writeData(files: 2)
        let state = "\(sandbox.root)/state"
        // Scheduled since long ago, once a year: its last time (1 January) passed with no run.
        let yearly = "0 0 0 1 1 *"
        var record = ScheduleRecord()
        record.jobs["backup"] = .init(expression: yearly, since: Date().addingTimeInterval(-400 * 86_400))
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        try record.write(stateDirectory: state)
        let settings = ["TZ": "UTC", "BACKUP_SCHEDULE": yearly, "BACKUP_PATHS": sandbox.data]

        var (server, log) = try sandbox.startServer(settings.merging(["SCHEDULE_CATCH_UP": "false"]) { $1 }, log: "off")
        Thread.sleep(forTimeInterval: 2)
        server.send(SIGTERM)
        XCTAssertEqual(waitForExit(server, seconds: 20)?.status, .exited(0))
        XCTAssertFalse(sandbox.readLog(log).contains("schedule: starting backup"), sandbox.readLog(log))
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(sandbox.repository)/config"), "no backup ran, so no repository")

        (server, log) = try sandbox.startServer(settings, log: "catch-up")
        try waitFor("the catch-up run", seconds: 30) { self.sandbox.readLog(log).contains("schedule: backup ended") }
        var text = sandbox.readLog(log)
        XCTAssertTrue(text.range(of: "schedule: backup missed a scheduled run \\(the first due 20[0-9][0-9]-01-01 00:00:00 \\+00:00; it has not succeeded since", options: .regularExpression) != nil, text)
        XCTAssertTrue(text.contains("schedule: starting backup (catch-up of the first missed run, due "), text)
        XCTAssertTrue(text.contains("backup using the REST server"), "the catch-up waited for the server:\n\(text)")
        XCTAssertTrue(text.contains("schedule: backup ended (exit code 0"), text)
        server.send(SIGTERM)
        XCTAssertEqual(waitForExit(server, seconds: 20)?.status, .exited(0))
        XCTAssertEqual(text.components(separatedBy: "schedule: starting backup").count - 1, 1, "once")
        XCTAssertEqual(try sandbox.snapshotIDs().count, 1)

        // Caught up: the next start has nothing to catch up.
        (server, log) = try sandbox.startServer(settings, log: "again")
        Thread.sleep(forTimeInterval: 2)
        server.send(SIGTERM)
        XCTAssertEqual(waitForExit(server, seconds: 20)?.status, .exited(0))
        text = sandbox.readLog(log)
        XCTAssertFalse(text.contains("missed a scheduled run"), text)
        XCTAssertFalse(text.contains("schedule: starting backup"), text)
        XCTAssertEqual(try sandbox.snapshotIDs().count, 1)

        // With the server stopped, status says that nothing runs the schedule, and what ran last.
        let status = try sandbox.run(["status"], settings)
        XCTAssertEqual(status.status, .exited(1))
        XCTAssertTrue(status.standardOutput.contains("BACKUP_SCHEDULE set, but no start-server runs with the state directory"), status.standardOutput)
        XCTAssertTrue(status.standardOutput.range(of: "backup at BACKUP_SCHEDULE=0 0 0 1 1 \\*: next run 20[0-9][0-9]-01-01 00:00:00 \\+00:00; last run [^;]+ succeeded", options: .regularExpression) != nil, status.standardOutput)
    }

    func testTheJitterIsWithinItsBoundStableForAHostAndApplied() throws {
        try sandbox.writeData(files: 2)
        let jitter = 5
        func preview(host: String) throws -> [Double] {
            let result = try sandbox.run(["schedule", "--json", "--next", "20", "--from", "2026-03-01T00:00:00Z"],
                                         ["TZ": "UTC", "BACKUP_SCHEDULE": "*/10 * * * * *", "BACKUP_PATHS": sandbox.data,
                                          "SCHEDULE_JITTER_SECONDS": "\(jitter)", "RESTIC_HOST": host])
            XCTAssertEqual(result.status, .exited(0), result.standardError)
            let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any])
            let jobs = try XCTUnwrap(object["jobs"] as? [[String: Any]])
            return try XCTUnwrap(jobs.first?["next"] as? [Double])
        }
        var offsets: Set<Int> = []
        for host in ["vm-a", "vm-b", "vm-c", "vm-d", "vm-e", "vm-f"] {
            let times = try preview(host: host)
            XCTAssertEqual(times.count, 20)
            let offset = Int(times[0]) % 10
            XCTAssertTrue((0..<jitter).contains(offset), "\(host): \(offset)")
            XCTAssertTrue(times.allSatisfy { Int($0) % 10 == offset }, "\(host): the same delay at every run")
            XCTAssertEqual(try preview(host: host), times, "stable for a host")
            XCTAssertEqual(offset, ScheduleSettings.jitterOffset(host: host, jitterSeconds: jitter))
            offsets.insert(offset)
        }
        XCTAssertGreaterThan(offsets.count, 1, "hosts are spread")

        // The server applies it: RESTIC_HOST's delay after each 10-second mark.
        let host = "jitter-host"
        let offset = ScheduleSettings.jitterOffset(host: host, jitterSeconds: jitter)
        let (server, log) = try sandbox.startServer(["TZ": "UTC", "BACKUP_SCHEDULE": "*/10 * * * * *", "BACKUP_PATHS": sandbox.data,
                                                     "SCHEDULE_JITTER_SECONDS": "\(jitter)", "RESTIC_HOST": host])
        try waitFor("a scheduled backup", seconds: 30) { self.sandbox.readLog(log).contains("schedule: backup ended") }
        server.send(SIGTERM)
        XCTAssertEqual(waitForExit(server, seconds: 20)?.status, .exited(0))
        let text = sandbox.readLog(log)
        XCTAssertTrue(text.contains("later on this host (SCHEDULE_JITTER_SECONDS)") || offset == 0, text)
        let due = dueSeconds(text, job: "backup")
        XCTAssertFalse(due.isEmpty, text)
        XCTAssertTrue(due.allSatisfy { $0 % 10 == offset }, "\(due) vs offset \(offset)")
    }

    func testAnInvalidScheduleIsRefusedAtStartNamingTheVariable() throws {
        let result = try sandbox.run(["start-server"], ["BACKUP_SCHEDULE": "0 2 * *", "CHECK_SCHEDULE": "0 0 5 * * MONDAY",
                                                        "FORGET_SCHEDULE": "@daily", "FORGET_ARGS": "--keep-tag 'a b", "SCHEDULE_JITTER_SECONDS": "1h"])
        XCTAssertEqual(result.status, .exited(78))
        let text = result.standardError
        XCTAssertTrue(text.contains("BACKUP_SCHEDULE=0 2 * *: expected 5 fields"), text)
        XCTAssertTrue(text.contains("CHECK_SCHEDULE=0 0 5 * * MONDAY: the day-of-week field"), text)
        XCTAssertTrue(text.contains("FORGET_ARGS=--keep-tag 'a b: a quote is not closed"), text)
        XCTAssertTrue(text.contains("SCHEDULE_JITTER_SECONDS=1h: expected a number of seconds"), text)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(sandbox.root)/state/server.json"), "nothing started")
        XCTAssertFalse(sandbox.serverIsReady())
        let missingPaths = try sandbox.run(["start-server"], ["BACKUP_SCHEDULE": "@daily"])
        XCTAssertEqual(missingPaths.status, .exited(78))
        XCTAssertTrue(missingPaths.standardError.contains("BACKUP_SCHEDULE is set but BACKUP_PATHS is not"), missingPaths.standardError)
    }
}
