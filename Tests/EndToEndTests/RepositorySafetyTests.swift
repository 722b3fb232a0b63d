import Foundation
import XCTest
import TestSupport
@testable import CloudBackupCore

/// The cases that could destroy a repository or report a failure as a success, each reproduced with
/// real restic and rclone: concurrent first backups, the remains of a repository, a destination that
/// vanishes during a backup, locks seen from another PID namespace (as `docker compose run --rm`
/// sees the server's container), read-only and full destinations, a restic that ignores SIGINT,
/// something else on the REST port, and a destination that never answers.
final class RepositorySafetyTests: SandboxTestCase {
    func keyCount(_ repository: String) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: repository + "/keys")) ?? []).count
    }

    func makeSources(_ names: [String]) throws -> [String] {
        try names.map { name in
            let directory = "\(sandbox.root)/\(name)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for index in 0..<5 {
                try "\(name) \(index) \(UUID().uuidString)\n".write(toFile: "\(directory)/f\(index)", atomically: true, encoding: .utf8)
            }
            return directory
        }
    }

    /// Both jobs succeed, the repository has one key, restic check passes, both snapshots load.
    func assertOneGoodRepository(_ repository: String, results: [(code: Int32?, log: String)], file: StaticString = #filePath, line: UInt = #line) throws {
        for result in results {
            XCTAssertEqual(result.code, 0, result.log, file: file, line: line)
        }
        XCTAssertEqual(keyCount(repository), 1, "one repository, one key", file: file, line: line)
        let check = try sandbox.restic(["check"], repository: repository)
        XCTAssertEqual(check.status, .exited(0), check.standardOutput + check.standardError, file: file, line: line)
        let ids = try sandbox.snapshotIDs(repository: repository)
        XCTAssertEqual(ids.count, 2, file: file, line: line)
        for id in ids {
            XCTAssertEqual(try sandbox.restic(["cat", "snapshot", id], repository: repository).status, .exited(0), "snapshot \(id) loads", file: file, line: line)
        }
    }

    func finish(_ job: (process: any RunningProcess, log: String), seconds: Double = 120) -> (code: Int32?, log: String) {
        let result = waitForExit(job.process, seconds: seconds)
        var code: Int32?
        if case .exited(let value)? = result?.status { code = value }
        return (code, sandbox.readLog(job.log))
    }

    // MARK: 1. Two first backups at once

    func testTwoFirstBackupsAtOnceMakeOneRepositoryDirectlyAndFromAnotherPIDNamespace() throws {
        let sources = try makeSources(["a", "b"])
        for (round, offset) in [0.0, 0.4, 1.2].enumerated() {
            let repository = "\(sandbox.root)/repository-\(round)"
            let env = ["BACKUP_REMOTE": repository]
            let first = try sandbox.launch(["backup", sources[0]], env, log: "first-\(round)")
            Thread.sleep(forTimeInterval: offset)
            // The second one as `docker compose run --rm` would run it: another PID namespace, same state volume.
            let second = try sandbox.launch(["backup", sources[1]], env, log: "second-\(round)", wrapper: Sandbox.otherPIDNamespace)
            let results = [finish(first), finish(second)]
            try assertOneGoodRepository(repository, results: results)
            let logs = results.map(\.log).joined(separator: "\n")
            XCTAssertEqual(logs.components(separatedBy: " created at \(repository); keep RESTIC_PASSWORD safe").count - 1, 1, "one init: \(logs)")
        }
    }

    func testTwoFirstBackupsAtOnceThroughTheServerMakeOneRepository() throws {
        let sources = try makeSources(["a", "b"])
        _ = try sandbox.startServer()
        let first = try sandbox.launch(["backup", sources[0]], log: "first")
        let second = try sandbox.launch(["backup", sources[1]], log: "second")
        let results = [finish(first), finish(second)]
        try assertOneGoodRepository(sandbox.repository, results: results)
        for result in results {
            XCTAssertTrue(result.log.contains("backup using the REST server"), result.log)
        }
    }

    // MARK: 2. The remains of a repository

    func testTheRemainsOfARepositoryAreNeverInitialisedOverLocallyOrThroughRclone() throws {
        try sandbox.writeData(files: 3)
        for remote in [sandbox.root + "/local-repo", ":local:" + sandbox.root + "/rclone-repo"] {
            let directory = remote.hasPrefix(":local:") ? String(remote.dropFirst(":local:".count)) : remote
            let env = ["BACKUP_REMOTE": remote]
            XCTAssertEqual(try sandbox.run(["backup", sandbox.data], env).status, .exited(0))
            // config and keys/ gone (a lifecycle rule, a deletion by hand); data/, index/, snapshots/ stay.
            try FileManager.default.removeItem(atPath: directory + "/config")
            try FileManager.default.removeItem(atPath: directory + "/keys")
            let before = try FileManager.default.subpathsOfDirectory(atPath: directory).sorted()

            let result = try sandbox.run(["backup", sandbox.data], env)
            XCTAssertEqual(result.status, .exited(69), result.standardError)
            XCTAssertTrue(result.standardError.contains("restic finds no repository at \(remote), but restic files are there (data/ ("), result.standardError)
            XCTAssertTrue(result.standardError.contains("snapshots/ (1 file)"), result.standardError)
            XCTAssertTrue(result.standardError.contains("Nothing was initialised or deleted"), result.standardError)
            XCTAssertFalse(result.standardError.contains("created restic repository"), result.standardError)
            XCTAssertEqual(try FileManager.default.subpathsOfDirectory(atPath: directory).sorted(), before, "nothing was added or removed")
        }
    }

    // MARK: 3. A destination that vanishes during the backup

    func testADestinationEmptiedDuringTheBackupIsReportedAsAFailure() throws {
        try sandbox.writeData(files: 2)
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        try sandbox.writeData(files: 2, megabytes: 60)
        let pings = try PingRecorder(in: sandbox)
        // Slowed down so that the removal lands mid-backup.
        let job = try sandbox.launch(["backup", "--limit-upload", "8192", sandbox.data], ["BACKUP_CHECK_URL": pings.url()], log: "backup")
        try waitFor("the backup's lock", seconds: 30) { !self.sandbox.locks().isEmpty }
        Thread.sleep(forTimeInterval: 1)
        // Everything but locks/ (restic would otherwise spend 90 s retrying to remove its lock).
        for name in ["config", "keys", "data", "index", "snapshots"] {
            try? FileManager.default.removeItem(atPath: "\(sandbox.repository)/\(name)")
        }
        let (code, log) = finish(job)
        XCTAssertTrue(log.contains("saved"), "restic itself believes it saved a snapshot: \(log.suffix(2000))")
        XCTAssertEqual(code, 1, log)
        XCTAssertTrue(log.contains("but it cannot be read back from the repository"), log)
        XCTAssertEqual(pings.pings.last?.path, "/ping/2b8a4c0e-1d2f-4e5a-9b6c-7d8e9f0a1b2c/1")
        XCTAssertTrue(pings.pings.last?.body.hasPrefix("backup failed: restic reported snapshot") == true, pings.pings.last?.body ?? "")

        // And what is left is never initialised over.
        let next = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(next.status, .exited(69), next.standardError)
    }

    // MARK: 4. Locks seen from another PID namespace

    func testALiveLockIsNotRemovedByAJobInAnotherPIDNamespace() throws {
        try sandbox.writeData(files: 2)
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        try sandbox.writeData(files: 2, megabytes: 24)
        // The nightly backup in the server's container, slowed to last ~10 s.
        let backup = try sandbox.launch(["backup", "--limit-upload", "2048", sandbox.data], log: "backup")
        try waitFor("the backup's lock", seconds: 30) { !self.sandbox.locks().isEmpty }
        let backupLocks = sandbox.locks()

        // `docker compose run --rm cloud-backup forget --prune`: same host name, another PID namespace.
        let forget = try sandbox.run(["forget", "--keep-last", "1", "--prune"], ["LOCK_WAIT_SECONDS": "3"], wrapper: Sandbox.otherPIDNamespace)
        XCTAssertEqual(forget.status, .exited(75), forget.standardError)
        XCTAssertTrue(forget.standardError.contains("a running cloud-backup job (restic backup"), forget.standardError)
        XCTAssertFalse(forget.standardError.contains("removed the stale lock"), forget.standardError)
        XCTAssertFalse(backup.process.hasExited, "the backup is still running")
        XCTAssertTrue(Set(sandbox.locks()).isSuperset(of: backupLocks) || sandbox.locks().count == backupLocks.count,
                      "the backup's lock is still there (restic may have refreshed it)")

        let (code, log) = finish(backup)
        XCTAssertEqual(code, 0, log)
        XCTAssertEqual(try sandbox.snapshotIDs().count, 2)
        // Once the backup is over, the same forget succeeds.
        let after = try sandbox.run(["forget", "--keep-last", "1", "--prune"], wrapper: Sandbox.otherPIDNamespace)
        XCTAssertEqual(after.status, .exited(0), after.standardError)
        XCTAssertEqual(try sandbox.restic(["check"]).status, .exited(0))
    }

    func testTheLockOfAJobKilledInAnotherPIDNamespaceIsRecoveredWithoutAHuman() throws {
        try sandbox.writeData(files: 2)
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        try sandbox.writeData(files: 2, megabytes: 24)
        let job = try sandbox.launch(["check", "--read-data"], ["RESTIC_PASSWORD": sandbox.environment["RESTIC_PASSWORD"]!], log: "check",
                                     wrapper: Sandbox.otherPIDNamespace)
        try waitFor("check's lock", seconds: 30) { !self.sandbox.locks().isEmpty }
        // The container is killed: its PID 1 (cloud-backup) dies, and the kernel kills restic with it.
        let namespaceInit = try XCTUnwrap(sandbox.descendants(of: job.process.pid).first { PortOwner.processName($0) == "cloud-backup" })
        kill(namespaceInit, SIGKILL)
        _ = waitForExit(job.process, seconds: 20)
        XCTAssertEqual(sandbox.locks().count, 1, "an exclusive lock is left behind")

        let next = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(next.status, .exited(0), next.standardError)
        XCTAssertTrue(next.standardError.contains("removed the stale lock"), next.standardError)
        XCTAssertTrue(next.standardError.contains("of a cloud-backup job that has ended"), next.standardError)
        XCTAssertEqual(sandbox.locks(), [])
    }

    // MARK: 6. Read-only and full destinations are not "locked"

    func testAReadOnlyOrFullDestinationFailsAtOnceWithItsRealCause() throws {
        try sandbox.writeData(files: 2)
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        let before = try sandbox.snapshotIDs()
        // The server sees its destination read-only (a bind mount in its own mount namespace); the job,
        // through the server, sees only restic's "500" after its retries: the cause comes from the
        // server's record.
        let readOnly = ["unshare", "--mount", "sh", "-c", "mount --bind \"$R\" \"$R\" && mount -o remount,bind,ro \"$R\" && exec \"$@\"", "sh"]
        let server = try sandbox.launch(["start-server"], ["R": sandbox.repository], log: "server", wrapper: readOnly)
        try waitFor("the server", seconds: 30) { self.sandbox.serverIsReady() }
        let started = Date()
        let result = try sandbox.run(["backup", sandbox.data], ["LOCK_WAIT_SECONDS": "900"])
        XCTAssertEqual(result.status, .exited(1), result.standardError)
        XCTAssertLessThan(Date().timeIntervalSince(started), 300, "restic's own retries only, not LOCK_WAIT_SECONDS")
        XCTAssertTrue(result.standardError.contains("backup using the REST server"), result.standardError)
        XCTAssertTrue(result.standardError.contains("restic could not write its lock file to the repository"), result.standardError)
        XCTAssertTrue(result.standardError.contains("the REST server reports: "), result.standardError)
        XCTAssertTrue(result.standardError.contains("read-only file system"), result.standardError)
        XCTAssertFalse(result.standardError.contains("locked"), result.standardError)
        XCTAssertFalse(result.standardError.contains("unlock"), result.standardError)
        server.process.send(SIGTERM)
        _ = waitForExit(server.process, seconds: 15)

        let full = sandbox.root + "/full"
        try FileManager.default.createDirectory(atPath: full, withIntermediateDirectories: true)
        let fill = "mount -t tmpfs -o size=2m tmpfs \"$F\" && cp -a \"$R\" \"$F/repo\" && (dd if=/dev/zero of=\"$F/fill\" bs=4k 2>/dev/null; true) && exec \"$@\""
        let fullResult = try sandbox.run(["backup", sandbox.data], ["R": sandbox.repository, "F": full, "BACKUP_REMOTE": full + "/repo", "LOCK_WAIT_SECONDS": "900"],
                                         wrapper: ["unshare", "--mount", "sh", "-c", fill, "sh"])
        XCTAssertEqual(fullResult.status, .exited(1), fullResult.standardError)
        XCTAssertTrue(fullResult.standardError.contains("the destination is full (no space left on device)"), fullResult.standardError)
        XCTAssertEqual(try sandbox.snapshotIDs(), before, "nothing changed")
    }

    // MARK: 7. A restic that had to be killed

    func testAResticKilledAfterTheGraceIsReportedAsSuchAndTheNextJobRemovesItsLock() throws {
        try sandbox.writeData(files: 2)
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        try sandbox.writeData(files: 2, megabytes: 16)
        let job = try sandbox.launch(["backup", "--limit-upload", "2048", sandbox.data], ["STOP_GRACE_SECONDS": "1"], log: "backup")
        try waitFor("the backup's lock", seconds: 30) { !self.sandbox.locks().isEmpty }
        let restic = try XCTUnwrap(sandbox.childPIDs(of: job.process.pid, named: "restic").first)
        kill(restic, SIGSTOP)  // deaf to SIGINT, as a hung restic would be
        job.process.send(SIGTERM)
        let (code, log) = finish(job, seconds: 20)
        XCTAssertEqual(code, 130, log)
        XCTAssertTrue(log.contains("restic did not stop within STOP_GRACE_SECONDS=1 s of the stop request and was killed, so its lock may remain"), log)
        XCTAssertFalse(log.contains("restic stopped cleanly"), log)
        XCTAssertEqual(sandbox.locks().count, 1)

        // A backup's lock is shared: the next job that needs the repository to itself meets it.
        let next = try sandbox.run(["check"])
        XCTAssertEqual(next.status, .exited(0), next.standardError)
        XCTAssertTrue(next.standardError.contains("removed the stale lock"), next.standardError)
        XCTAssertTrue(next.standardError.contains("of a cloud-backup job that has ended (killed)"), next.standardError)
        XCTAssertEqual(sandbox.locks(), [])
    }

    // MARK: 8. Something else on RESTIC_REST_PORT

    func testOnlyThisStateDirectorysServerForThisDestinationIsEverUsed() throws {
        try sandbox.writeData(files: 2)
        // (a) A web application answering 200 to anything.
        let web = try sandbox.launchProgram("python3", ["-c", """
            import http.server
            class H(http.server.BaseHTTPRequestHandler):
                def do_HEAD(self): self.send_response(200); self.end_headers()
                do_GET = do_POST = do_HEAD
            http.server.HTTPServer(("127.0.0.1", \(sandbox.port)), H).serve_forever()
            """], log: "web")
        try waitFor("the web application", seconds: 10) { RestServerProbe.probe(port: self.sandbox.port, credentials: nil) != .nothing }
        let first = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(first.status, .exited(0), first.standardError)
        XCTAssertTrue(first.standardError.contains("something that is not a restic REST server answers on 127.0.0.1:\(sandbox.port) (HTTP 200); going to the destination directly"), first.standardError)
        web.send(SIGKILL)
        _ = web.wait()

        // (b) A real rclone serve restic, not started by cloud-backup, serving another directory.
        let foreignDirectory = sandbox.root + "/foreign"
        try FileManager.default.createDirectory(atPath: foreignDirectory, withIntermediateDirectories: true)
        let foreign = try sandbox.launchProgram("rclone", ["serve", "restic", foreignDirectory, "--addr", "127.0.0.1:\(sandbox.port)"], log: "foreign")
        try waitFor("the foreign server", seconds: 20) { RestServerProbe.probe(port: self.sandbox.port, credentials: nil) == .restServer }
        let second = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(second.status, .exited(0), second.standardError)
        XCTAssertTrue(second.standardError.contains("a restic REST server answers on 127.0.0.1:\(sandbox.port), but no start-server of this state directory"), second.standardError)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: foreignDirectory), [], "nothing reached the foreign server's directory")
        let status = try sandbox.run(["server-status"])
        XCTAssertEqual(status.status, .exited(1))
        XCTAssertTrue(status.standardOutput.contains("but no start-server of this state directory"), status.standardOutput)
        foreign.send(SIGTERM)
        _ = foreign.wait()

        // (c) This state directory's server, still serving the destination of yesterday's settings.
        let old = sandbox.root + "/old-destination"
        _ = try sandbox.startServer(["BACKUP_REMOTE": old])
        let third = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(third.status, .exited(0), third.standardError)
        XCTAssertTrue(third.standardError.contains("serves \(old), not this job's destination \(sandbox.repository)"), third.standardError)
        XCTAssertEqual(try sandbox.snapshotIDs().count, 3, "every backup went to the job's own destination")
        XCTAssertFalse(FileManager.default.fileExists(atPath: old + "/config"))
    }

    // MARK: 9. A destination that accepts connections and never answers

    func testAServerWhoseDestinationNeverAnswersCountsFailedStartsAndGivesUp() throws {
        let hang = try freeLoopbackPort()
        _ = try sandbox.launchProgram("python3", ["-c", """
            import socket, time
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", \(hang))); s.listen(64); held = []
            while True:
                c, _ = s.accept(); held.append(c)
            """], log: "hang")
        try """
            [hung]
            type = s3
            provider = Other
            access_key_id = test-access-key
            secret_access_key = test-secret-key
            endpoint = http://127.0.0.1:\(hang)
            """.write(toFile: sandbox.environment["RCLONE_CONFIG"]!, atomically: true, encoding: .utf8)
        let env = ["BACKUP_REMOTE": "hung:bucket/path", "SERVER_START_TIMEOUT_SECONDS": "5", "CLOUD_BACKUP_SERVER_MAX_QUICK_FAILURES": "2"]
        let server = try sandbox.launch(["start-server"], env, log: "server")
        try waitFor("the server's record", seconds: 10) {
            FileManager.default.fileExists(atPath: ServerRecord.recordPath(stateDirectory: self.sandbox.root + "/state"))
        }
        let status = try sandbox.run(["server-status"], env)
        XCTAssertEqual(status.status, .exited(1))
        XCTAssertTrue(status.standardOutput.contains("start-server is running (PID \(server.process.pid))"), status.standardOutput)
        XCTAssertTrue(status.standardOutput.contains("but the REST server is not ready"), status.standardOutput)

        let (code, log) = finish(server, seconds: 60)
        XCTAssertEqual(code, 69, log)
        XCTAssertTrue(log.contains("rclone did not start serving within SERVER_START_TIMEOUT_SECONDS=5 s"), log)
        XCTAssertTrue(log.contains("failed 2 times in a row before it could serve; giving up"), log)
        XCTAssertFalse(FileManager.default.fileExists(atPath: ServerRecord.recordPath(stateDirectory: sandbox.root + "/state")), "the record goes with the server")
    }
}
