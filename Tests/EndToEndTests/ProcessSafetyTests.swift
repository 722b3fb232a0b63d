import Foundation
import XCTest
@testable import CloudBackupCore

/// The built binary under a hostile parent: signal dispositions and masks survive exec, so whatever
/// the parent set (a cron, a supervisor, a Python wrapper) reaches cloud-backup.
final class ProcessSafetyTests: SandboxTestCase {
    /// Runs `cloud-backup ARGS…` through python3, which first applies `setup` (Python statements) to
    /// itself and then execs the binary: what it set is what the binary starts with.
    func runUnderParent(_ setup: String, _ arguments: [String], _ extra: [String: String] = [:]) throws -> ProcessResult {
        let script = "import signal, os, sys\n\(setup)\nos.execv(sys.argv[1], sys.argv[1:])"
        return try sandbox.runner.run(ProcessSpec(executable: "python3", arguments: ["-c", script, sandbox.binary] + arguments,
                                                  environment: sandbox.environment.merging(extra) { $1 },
                                                  standardOutput: .collect(limit: 8 << 20), standardError: .collect(limit: 8 << 20)))
    }

    func testAParentThatIgnoresSIGCHLDCannotTurnAFailureIntoSuccess() throws {
        try sandbox.writeData(files: 3)
        let first = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(first.status, .exited(0), first.standardError)

        // With SIGCHLD ignored the kernel reaps restic itself; its "exit 1, wrong password" must not
        // come out as exit 0.
        let result = try runUnderParent("signal.signal(signal.SIGCHLD, signal.SIG_IGN)", ["backup", sandbox.data],
                                        ["RESTIC_PASSWORD": "not-the-password"])
        XCTAssertEqual(result.status, .exited(1), result.standardError)
        XCTAssertTrue(result.standardError.contains("wrong password"), result.standardError)
        XCTAssertEqual(try sandbox.snapshotIDs().count, 1)
    }

    func testAParentThatBlocksSIGTERMCannotMakeTheJobDeafToIt() throws {
        // docker stop / ofelia stop with SIGTERM: a mask inherited from the parent must not hide it.
        try sandbox.writeData(files: 2, megabytes: 8)
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        try sandbox.writeData(files: 2, megabytes: 160)
        let log = "\(sandbox.root)/logs/blocked.log"
        let script = "import signal, os, sys\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})\n"
            + "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)\nos.dup2(fd, 1)\nos.dup2(fd, 2)\n"
            + "os.execv(sys.argv[2], sys.argv[2:])"
        let job = try sandbox.runner.launch(ProcessSpec(executable: "python3", arguments: ["-c", script, log, sandbox.binary, "backup", sandbox.data],
                                                        environment: sandbox.environment, standardOutput: .discard, standardError: .discard))
        defer {
            if !job.hasExited { job.send(SIGKILL) }
            _ = job.wait()
        }
        try waitFor("the backup's lock", seconds: 30) { !self.sandbox.locks().isEmpty }
        Thread.sleep(forTimeInterval: 0.3)
        job.send(SIGTERM)
        let result = waitForExit(job, seconds: 15)
        let text = sandbox.readLog(log)
        XCTAssertEqual(result?.status, .exited(130), text)
        XCTAssertTrue(text.contains("received SIGTERM: asking restic"), text)
        XCTAssertEqual(sandbox.locks(), [], "restic removed its lock")
    }
}
