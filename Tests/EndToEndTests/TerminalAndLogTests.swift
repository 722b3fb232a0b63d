import Foundation
import XCTest
@testable import CloudBackupCore

/// What a person sees: by hand on a terminal (a pseudo-terminal, Tests/Fixtures/pty_run.py) and in
/// logs (stdout a pipe, as ofelia and `docker logs` see it), with the real restic and rclone.
final class TerminalAndLogTests: SandboxTestCase {
    /// Runs `cloud-backup ARGS…` as the foreground job of a terminal; the transcript without control sequences.
    func runInTerminal(_ arguments: [String], _ extra: [String: String] = [:], interruptAfter: String? = nil,
                       asUser user: String? = nil) throws -> (code: Int32?, text: String) {
        let transcript = "\(sandbox.root)/logs/terminal-\(UUID().uuidString.prefix(6)).txt"
        var command = ["\(Sandbox.fixtures)/pty_run.py", transcript, "--timeout", "120"]
        if let interruptAfter { command += ["--interrupt-after", interruptAfter] }
        command.append("--")
        if let user { command += ["setpriv", "--reuid=\(user)", "--regid=nogroup", "--clear-groups"] }
        command += [sandbox.binary] + arguments
        let result = try sandbox.runner.run(ProcessSpec(executable: "python3", arguments: command,
                                                        environment: sandbox.environment.merging(extra) { $1 }))
        let raw = (try? String(contentsOfFile: transcript, encoding: .utf8)) ?? ""
        guard case .exited(let code) = result.status else { return (nil, raw) }
        return (code, ResticMessages.stripTerminalControls(raw))
    }

    func testABackupByHandShowsResticsOwnProgressErrorsAndSummary() throws {
        try sandbox.writeData(files: 30)
        // The first one creates the repository: restic's "Is there a repository…?" is not shown,
        // the job's own words are.
        let first = try runInTerminal(["backup", sandbox.data])
        XCTAssertEqual(first.code, 0, first.text)
        XCTAssertFalse(first.text.contains("Is there a repository at the following location?"), first.text)
        XCTAssertFalse(first.text.contains("unable to open config file"), first.text)
        XCTAssertTrue(first.text.contains("no repository at \(sandbox.repository) yet: creating it with `restic init`"), first.text)
        try "changed\n".write(toFile: sandbox.data + "/file-0.txt", atomically: true, encoding: .utf8)
        let (code, text) = try runInTerminal(["backup", sandbox.data])
        XCTAssertEqual(code, 0, text)
        for line in ["using parent snapshot", "Files:", "1 changed", "processed 30 files", "saved"] {
            XCTAssertTrue(text.contains(line), "restic's own «\(line)» on the terminal:\n\(text)")
        }
        XCTAssertTrue(text.contains("cloud-backup: backup finished: snapshot "), text)
        XCTAssertFalse(text.contains("backup finished: backup finished"), text)
        XCTAssertFalse(text.contains("see the output"), text)

        let forget = try runInTerminal(["forget", "--keep-last", "1"])
        XCTAssertEqual(forget.code, 0, forget.text)
        XCTAssertTrue(forget.text.contains("keep 1 snapshots"), forget.text)
        XCTAssertFalse(forget.text.contains("forget finished: forget finished"), forget.text)
        let check = try runInTerminal(["check"])
        XCTAssertEqual(check.code, 0, check.text)
        XCTAssertTrue(check.text.contains("no errors were found"), check.text)
        XCTAssertEqual(check.text.components(separatedBy: "check finished").count, 2, "said once: \(check.text)")
    }

    func testCtrlCAtTheTerminalStopsResticCleanly() throws {
        try sandbox.writeData(files: 2)
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        try sandbox.writeData(files: 2, megabytes: 16)
        // Typed once restic's status line is on the screen.
        let (code, text) = try runInTerminal(["backup", "--limit-upload", "2048", sandbox.data], interruptAfter: "0 errors")
        XCTAssertEqual(code, 130, text)
        XCTAssertTrue(text.contains("backup interrupted"), text)
        XCTAssertEqual(sandbox.locks(), [], "restic got the SIGINT itself and removed its lock")
        XCTAssertEqual(try sandbox.restic(["check"]).status, .exited(0))
    }

    func testUnreadableFilesAreNamedWithWhatToDoOnATerminalAndInLogs() throws {
        // Run as nobody, with everything the job writes owned by nobody, and one file only root may read.
        let home = sandbox.root + "/nobody"
        for directory in ["state", "cache", "home", "data"] {
            try FileManager.default.createDirectory(atPath: "\(home)/\(directory)", withIntermediateDirectories: true)
        }
        try "readable\n".write(toFile: "\(home)/data/public.txt", atomically: true, encoding: .utf8)
        try "root only\n".write(toFile: "\(home)/data/private.txt", atomically: true, encoding: .utf8)
        XCTAssertEqual(try sandbox.runner.run(ProcessSpec(executable: "sh", arguments: ["-c", "chmod 755 \(sandbox.root) && chown -R nobody \(home) && chown root \(home)/data/private.txt && chmod 600 \(home)/data/private.txt"],
                                                          environment: sandbox.environment)).status, .exited(0))
        let env = ["HOME": "\(home)/home", "CLOUD_BACKUP_STATE_DIR": "\(home)/state", "RESTIC_CACHE_DIR": "\(home)/cache"]

        let (code, text) = try runInTerminal(["backup", "\(home)/data"], env, asUser: "nobody")
        XCTAssertEqual(code, 3, text)
        XCTAssertTrue(text.contains("1 file could not be read: permission denied: \(home)/data/private.txt"), text)
        XCTAssertTrue(text.contains("Give this user read access to them"), text)

        // The same backup in a log (stdout a pipe).
        let inLogs = try sandbox.runner.run(ProcessSpec(executable: "setpriv", arguments: ["--reuid=nobody", "--regid=nogroup", "--clear-groups", sandbox.binary, "backup", "\(home)/data"],
                                                        environment: sandbox.environment.merging(env) { $1 },
                                                        standardOutput: .collect(limit: 1 << 20), standardError: .collect(limit: 1 << 20)))
        XCTAssertEqual(inLogs.status, .exited(3), inLogs.standardError)
        let all = inLogs.standardOutput + inLogs.standardError
        XCTAssertTrue(all.contains("error: permission denied: \(home)/data/private.txt"), all)
        XCTAssertTrue(all.contains("could not be read: permission denied: \(home)/data/private.txt"), all)
        for raw in ["{\"message_type\"", "\"Err\"", "\u{1B}["] {
            XCTAssertFalse(all.contains(raw), "no \(raw) in logs:\n\(all)")
        }
    }

    func testRcloneDoesNotComplainAboutAConfigFileNobodyNeeds() throws {
        // No rclone.conf anywhere: the local default destination needs none.
        sandbox.environment.removeValue(forKey: "RCLONE_CONFIG")
        try FileManager.default.removeItem(atPath: "\(sandbox.root)/home/rclone.conf")
        try sandbox.writeData(files: 2)
        let (_, log) = try sandbox.startServer()
        let backup = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(backup.status, .exited(0), backup.standardError)
        let remote = try sandbox.run(["backup", sandbox.data], ["BACKUP_REMOTE": ":local:\(sandbox.root)/other"])
        XCTAssertEqual(remote.status, .exited(0), remote.standardError)
        for text in [sandbox.readLog(log), backup.standardError, remote.standardError] {
            XCTAssertFalse(text.contains("not found - using defaults"), text)
        }
    }

    func testLogsSaySentencesOnceAndCountSnapshots() throws {
        try sandbox.writeData(files: 3)
        let pings = try PingRecorder(in: sandbox)
        let env = ["FORGET_CHECK_URL": pings.url(check: "44444444-4444-4444-8444-444444444444"),
                   "CHECK_CHECK_URL": pings.url(check: "55555555-5555-4555-8555-555555555555")]
        for _ in 0..<3 { XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0)) }
        let forget = try sandbox.run(["forget", "--keep-last", "1"], env)
        XCTAssertEqual(forget.status, .exited(0), forget.standardError)
        XCTAssertTrue(forget.standardError.contains("cloud-backup: forget finished: 2 snapshots removed, 1 kept"), forget.standardError)
        XCTAssertFalse(forget.standardError.contains("forget finished: forget finished"), forget.standardError)
        XCTAssertTrue(pings.pings.last?.body.hasPrefix("forget finished: 2 snapshots removed, 1 kept") == true, pings.pings.last?.body ?? "")
        let check = try sandbox.run(["check"], env)
        XCTAssertEqual(check.status, .exited(0), check.standardError)
        XCTAssertEqual(check.standardError.components(separatedBy: "check finished").count, 2, check.standardError)
        for text in [forget.standardOutput, forget.standardError, check.standardOutput, check.standardError] {
            XCTAssertFalse(text.contains("\u{1B}["), "no terminal control sequences in logs: \(text)")
        }
    }
}
