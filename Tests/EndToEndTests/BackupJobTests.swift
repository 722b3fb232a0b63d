import Foundation
import XCTest
import TestSupport
@testable import CloudBackupCore

/// `backup`, `forget` and `restic` with the real restic and rclone, checking messages, exit codes,
/// pings and that no data was lost.
final class BackupJobTests: SandboxTestCase {
    func testFirstBackupInitialisesThenSecondBackupThenForgetWithPrune() throws {
        try sandbox.writeData(files: 20)
        let pings = try PingRecorder(in: sandbox)
        let env = ["BACKUP_CHECK_URL": pings.url(check: "11111111-1111-4111-8111-111111111111"),
                   "FORGET_CHECK_URL": pings.url(check: "22222222-2222-4222-8222-222222222222")]

        let first = try sandbox.run(["backup", "--tag", "e2e", sandbox.data], env)
        XCTAssertEqual(first.status, .exited(0), first.standardError)
        XCTAssertTrue(first.standardError.contains("backup using the destination directly (\(sandbox.repository))"), first.standardError)
        XCTAssertTrue(first.standardError.contains("no repository at \(sandbox.repository) yet: creating it with `restic init`"), first.standardError)
        XCTAssertTrue(first.standardOutput.contains("snapshot "), "restic's output streams through: \(first.standardOutput)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: sandbox.repository + "/config"))

        try "changed\n".write(toFile: sandbox.data + "/file-0.txt", atomically: true, encoding: .utf8)
        let second = try sandbox.run(["backup", "--tag", "e2e", sandbox.data], env)
        XCTAssertEqual(second.status, .exited(0), second.standardError)
        XCTAssertFalse(second.standardError.contains("creating it"), "the second backup must not init")
        XCTAssertTrue(second.standardError.contains("files: 0 new, 1 changed, 19 unmodified"), second.standardError)
        XCTAssertEqual(try sandbox.snapshotIDs().count, 2)

        let forget = try sandbox.run(["forget", "--keep-last", "1", "--prune"], env)
        XCTAssertEqual(forget.status, .exited(0), forget.standardError)
        XCTAssertEqual(try sandbox.snapshotIDs().count, 1)
        XCTAssertEqual(try sandbox.restic(["check"]).status, .exited(0))

        // Nothing lost: the remaining snapshot restores byte for byte.
        let target = sandbox.root + "/restore"
        XCTAssertEqual(try sandbox.restic(["restore", "latest", "--target", target]).status, .exited(0))
        for index in 0..<20 {
            let original = try Data(contentsOf: URL(fileURLWithPath: "\(sandbox.data)/file-\(index).txt"))
            let restored = try Data(contentsOf: URL(fileURLWithPath: "\(target)\(sandbox.data)/file-\(index).txt"))
            XCTAssertEqual(original, restored)
        }

        let recorded = pings.pings
        XCTAssertEqual(recorded.map { "\($0.method) \($0.path)" }, [
            "GET /ping/11111111-1111-4111-8111-111111111111/start", "POST /ping/11111111-1111-4111-8111-111111111111/0",
            "GET /ping/11111111-1111-4111-8111-111111111111/start", "POST /ping/11111111-1111-4111-8111-111111111111/0",
            "GET /ping/22222222-2222-4222-8222-222222222222/start", "POST /ping/22222222-2222-4222-8222-222222222222/0",
        ])
        XCTAssertEqual(recorded[0].query["rid"], recorded[1].query["rid"], "start and end share the run id")
        XCTAssertNotEqual(recorded[0].query["rid"], recorded[2].query["rid"])
        XCTAssertTrue(recorded[1].body.hasPrefix("backup finished: snapshot "), recorded[1].body)
        XCTAssertTrue(recorded[1].body.contains("files: 20 new, 0 changed, 0 unmodified"), recorded[1].body)
        XCTAssertTrue(recorded[1].body.contains("--- end of the output ---"), recorded[1].body)
        XCTAssertTrue(recorded[5].body.hasPrefix("forget finished"), recorded[5].body)
    }

    func testResticHostIsRecordedAndForgetOnlyTouchesThisHost() throws {
        try sandbox.writeData(files: 2)
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data], ["RESTIC_HOST": "vm-one"]).status, .exited(0))
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data], ["RESTIC_HOST": "vm-two"]).status, .exited(0))
        let snapshots = try sandbox.run(["restic", "snapshots", "--json"])
        let hosts = (try JSONSerialization.jsonObject(with: Data(snapshots.standardOutput.utf8)) as? [[String: Any]] ?? []).compactMap { $0["hostname"] as? String }
        XCTAssertEqual(Set(hosts), ["vm-one", "vm-two"])
        let forgetTwo = try sandbox.run(["forget", "--keep-last", "1"], ["RESTIC_HOST": "vm-two"])
        XCTAssertEqual(forgetTwo.status, .exited(0), forgetTwo.standardError)
        XCTAssertTrue(forgetTwo.standardOutput.contains("host [vm-two]") || forgetTwo.standardOutput.contains("vm-two"), forgetTwo.standardOutput)
        XCTAssertFalse(forgetTwo.standardOutput.contains("vm-one"), forgetTwo.standardOutput)
    }

    func testResticPassthroughKeepsInputOutputAndExitCode() throws {
        try sandbox.writeData(files: 1)
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        let fromStdin = try sandbox.run(["restic", "backup", "--stdin", "--stdin-filename", "note.txt"], stdin: "piped through\n")
        XCTAssertEqual(fromStdin.status, .exited(0), fromStdin.standardError)
        XCTAssertTrue(fromStdin.standardError.contains("restic using the destination directly"), fromStdin.standardError)
        let dump = try sandbox.run(["restic", "dump", "latest", "/note.txt"])
        XCTAssertEqual(dump.standardOutput, "piped through\n")
        let bad = try sandbox.run(["restic", "cat", "no-such-thing"])
        XCTAssertEqual(bad.status, .exited(1))
        XCTAssertEqual(try sandbox.run(["restic", "version"]).status, .exited(0))
    }

    func testWrongPasswordFailsClearlyAndTouchesNothing() throws {
        try sandbox.writeData(files: 3)
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        let before = try sandbox.snapshotIDs()
        let keysBefore = try FileManager.default.contentsOfDirectory(atPath: sandbox.repository + "/keys")
        let pings = try PingRecorder(in: sandbox)

        let result = try sandbox.run(["backup", sandbox.data], ["RESTIC_PASSWORD": "not-the-password", "BACKUP_CHECK_URL": pings.url()])
        XCTAssertEqual(result.status, .exited(1))
        XCTAssertTrue(result.standardError.contains("wrong password — RESTIC_PASSWORD does not open the repository"), result.standardError)
        XCTAssertFalse(result.standardError.contains("restic init"))
        let end = pings.pings.last!
        XCTAssertEqual(end.path, "/ping/2b8a4c0e-1d2f-4e5a-9b6c-7d8e9f0a1b2c/1")
        XCTAssertTrue(end.body.hasPrefix("backup failed: wrong password"), end.body)
        XCTAssertFalse(end.body.contains("not-the-password"))

        XCTAssertEqual(try sandbox.snapshotIDs(), before)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: sandbox.repository + "/keys"), keysBefore)
        XCTAssertEqual(try sandbox.restic(["check"]).status, .exited(0))
    }

    func testStaleLockFromAKilledResticIsRecovered() throws {
        try sandbox.writeData(files: 2, megabytes: 40)
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        // `restic check --read-data` (through cloud-backup, so registered) holds an exclusive lock while
        // it reads every pack; kill it mid-way.
        let (job, _) = try sandbox.launch(["restic", "check", "--read-data"], log: "check")
        try waitFor("restic check's lock", seconds: 20) { !self.sandbox.locks().isEmpty }
        let restic = try XCTUnwrap(sandbox.childPIDs(of: job.pid, named: "restic").first)
        kill(restic, SIGKILL)
        _ = job.wait()
        XCTAssertEqual(sandbox.locks().count, 1, "a stale exclusive lock is left behind")

        let result = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(result.status, .exited(0), result.standardError)
        XCTAssertTrue(result.standardError.contains("removed the stale lock"), result.standardError)
        XCTAssertTrue(result.standardError.contains("made by restic check (PID \(restic)) of a cloud-backup job that has ended (killed)"), result.standardError)
        XCTAssertFalse(result.standardError.contains("restic unlock"), result.standardError)
        XCTAssertEqual(sandbox.locks(), [])
        XCTAssertEqual(try sandbox.snapshotIDs().count, 2)
    }

    func testALockOfAResticNotStartedByCloudBackupIsNotRemovedOnAGuess() throws {
        try sandbox.writeData(files: 2, megabytes: 40)
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        // A raw restic, not through cloud-backup: from here nothing can tell whether a restic of
        // that PID runs in another container with the same host name.
        let check = try sandbox.launchProgram("restic", ["check", "--read-data"], ["RESTIC_REPOSITORY": sandbox.repository], log: "check")
        try waitFor("restic check's lock", seconds: 20) { !self.sandbox.locks().isEmpty }
        check.send(SIGKILL)
        _ = check.wait()

        let result = try sandbox.run(["backup", sandbox.data], ["LOCK_WAIT_SECONDS": "2"])
        XCTAssertEqual(result.status, .exited(75), result.standardError)
        XCTAssertTrue(result.standardError.contains("not a restic started by cloud-backup with this state directory"), result.standardError)
        XCTAssertTrue(result.standardError.contains("cloud-backup restic unlock --remove-all"), result.standardError)
        XCTAssertEqual(sandbox.locks().count, 1, "left for its age (30 min) or a person to decide")
    }

    func testALiveLockMakesTheJobBusyThenItSucceeds() throws {
        try sandbox.writeData(files: 2, megabytes: 20)
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        let check = try sandbox.launchProgram("restic", ["check", "--read-data"], ["RESTIC_REPOSITORY": sandbox.repository], log: "check")
        try waitFor("restic check's lock", seconds: 20) { !self.sandbox.locks().isEmpty }
        check.send(SIGSTOP)  // alive, holding its exclusive lock
        let pings = try PingRecorder(in: sandbox)

        let busy = try sandbox.run(["backup", sandbox.data], ["LOCK_WAIT_SECONDS": "2", "BACKUP_CHECK_URL": pings.url()])
        XCTAssertEqual(busy.status, .exited(75), busy.standardError)
        XCTAssertTrue(busy.standardError.contains("the repository is still locked after waiting 2 s"), busy.standardError)
        XCTAssertEqual(pings.pings.last?.path, "/ping/2b8a4c0e-1d2f-4e5a-9b6c-7d8e9f0a1b2c/75")
        XCTAssertTrue(pings.pings.last?.body.contains("repository busy") == true)
        XCTAssertEqual(try sandbox.snapshotIDs().count, 1)

        check.send(SIGCONT)
        XCTAssertEqual(waitForExit(check, seconds: 60)?.status, .exited(0))
        let after = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(after.status, .exited(0), after.standardError)
        XCTAssertEqual(try sandbox.snapshotIDs().count, 2)
    }

    func testSigtermMidBackupStopsResticCleanlyAndLeavesNoLock() throws {
        try sandbox.writeData(files: 2, megabytes: 8)
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        try sandbox.writeData(files: 2, megabytes: 160)
        let pings = try PingRecorder(in: sandbox)
        let (job, log) = try sandbox.launch(["backup", sandbox.data], ["BACKUP_CHECK_URL": pings.url()], log: "backup")
        try waitFor("the backup's lock", seconds: 30) { !self.sandbox.locks().isEmpty }
        Thread.sleep(forTimeInterval: 0.3)
        job.send(SIGTERM)
        let result = waitForExit(job, seconds: 15)
        XCTAssertEqual(result?.status, .exited(130), sandbox.readLog(log))
        let text = sandbox.readLog(log)
        XCTAssertTrue(text.contains("received SIGTERM: asking restic"), text)
        XCTAssertTrue(text.contains("backup interrupted: stopped on request"), text)
        XCTAssertEqual(sandbox.locks(), [], "restic removed its lock")
        XCTAssertEqual(pings.pings.last?.path, "/ping/2b8a4c0e-1d2f-4e5a-9b6c-7d8e9f0a1b2c/130")
        XCTAssertEqual(sandbox.childPIDs(of: job.pid, named: "restic"), [])
        XCTAssertEqual(try sandbox.restic(["check"]).status, .exited(0))
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        XCTAssertEqual(try sandbox.snapshotIDs().count, 2)
    }

    func testHealthchecksDownOrSlowNeverFailsTheJob() throws {
        try sandbox.writeData(files: 2)
        let closedPort = try freeLoopbackPort()
        let started = Date()
        let down = try sandbox.run(["backup", sandbox.data], ["BACKUP_CHECK_URL": "http://127.0.0.1:\(closedPort)/ping/abc", "PING_TIMEOUT_SECONDS": "2"])
        let downSeconds = Date().timeIntervalSince(started)
        XCTAssertEqual(down.status, .exited(0), down.standardError)
        XCTAssertTrue(down.standardError.contains("warning: could not ping Healthchecks at http://127.0.0.1:\(closedPort)/…"), down.standardError)
        XCTAssertLessThan(downSeconds, 2 * 35 + 30, "each ping's delay is bounded")

        let slow = try PingRecorder(in: sandbox, arguments: ["--delay", "4"])
        let slowStart = Date()
        let result = try sandbox.run(["backup", sandbox.data], ["BACKUP_CHECK_URL": slow.url(), "PING_TIMEOUT_SECONDS": "1"])
        let slowSeconds = Date().timeIntervalSince(slowStart)
        XCTAssertEqual(result.status, .exited(0), result.standardError)
        XCTAssertTrue(result.standardError.contains("could not ping Healthchecks"), result.standardError)
        // PING_TIMEOUT_SECONDS=1 bounds a ping, retries included, to 1*3+5 = 8 s.
        XCTAssertLessThan(slowSeconds, 2 * 8 + 30)
        XCTAssertEqual(try sandbox.snapshotIDs().count, 2)
    }

    func testPingBodiesAreCutToTheAnnouncedLimit() throws {
        // 3,000 files make restic print one line each with --verbose=2.
        for index in 0..<3000 {
            _ = FileManager.default.createFile(atPath: "\(sandbox.data)/f\(index)", contents: Data("\(index)".utf8))
        }
        let pings = try PingRecorder(in: sandbox, arguments: ["--body-limit", "2000"])
        let result = try sandbox.run(["backup", "--verbose=2", sandbox.data], ["BACKUP_CHECK_URL": pings.url()])
        XCTAssertEqual(result.status, .exited(0), result.standardError)
        let end = pings.pings.last!
        XCTAssertLessThanOrEqual(end.body.utf8.count, 2000)
        XCTAssertTrue(end.body.hasPrefix("backup finished: snapshot "), end.body)
        XCTAssertTrue(end.body.contains("[… earlier output cut to fit the 2000-byte ping limit …]"), end.body)
        XCTAssertTrue(end.body.hasSuffix("saved"), end.body)
    }
}
