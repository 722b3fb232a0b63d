import Foundation
import XCTest
import TestSupport
@testable import CloudBackupCore

/// `status` on a healthy setup, then with each part broken in turn: the ✗ line and its fix.
final class StatusTests: SandboxTestCase {
    var pings: PingRecorder!

    override func setUpWithError() throws {
        try super.setUpWithError()
        try sandbox.writeData(files: 2)
        pings = try PingRecorder(in: sandbox)
        sandbox.environment["BACKUP_CHECK_URL"] = pings.url()
    }

    func status(_ extra: [String: String] = [:], removing: [String] = []) throws -> (code: Int32, text: String) {
        let result = try sandbox.run(["status"], extra, removing: removing)
        guard case .exited(let code) = result.status else { return (-1, result.standardOutput) }
        return (code, result.standardOutput + result.standardError)
    }

    func assertLine(_ text: String, _ line: String, fix: String? = nil, file: StaticString = #filePath, lineNumber: UInt = #line) {
        XCTAssertTrue(text.contains(line), "missing «\(line)» in:\n\(text)", file: file, line: lineNumber)
        if let fix {
            XCTAssertTrue(text.contains("\(line)\n    fix: \(fix)") || text.contains("fix: \(fix)"), "missing fix «\(fix)» in:\n\(text)", file: file, line: lineNumber)
        }
    }

    func testHealthyThenEachPartBroken() throws {
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data], ["RESTIC_HOST": "vm-status"]).status, .exited(0))
        let (server, _) = try sandbox.startServer()
        // (How fast it is, is measured in bench/, not asserted here.)
        let healthy = try status(["RESTIC_HOST": "vm-status"])
        XCTAssertEqual(healthy.code, 0, healthy.text)
        for line in ["✓ environment: valid", "✓ restic: restic ", "✓ rclone: rclone v", "✓ destination: \(sandbox.repository) is a writable directory",
                     "✓ repository: initialised, password accepted (through the REST server", "✓ snapshots: latest snapshot of vm-status: ",
                     "✓ REST server: ready on 127.0.0.1:\(sandbox.port) (start-server PID ", "✓ monitoring: BACKUP_CHECK_URL: 127.0.0.1:\(pings.port) reachable", "all is well"] {
            assertLine(healthy.text, line)
        }
        XCTAssertEqual(pings.pings.count, 2, "status sent no ping (only the backup's two)")

        let json = try sandbox.run(["status", "--json"], ["RESTIC_HOST": "vm-status"])
        let object = try JSONSerialization.jsonObject(with: Data(json.standardOutput.utf8)) as? [String: Any]
        XCTAssertEqual(object?["ok"] as? Bool, true)
        XCTAssertEqual((object?["checks"] as? [[String: Any]])?.count, 8)

        let wrongPassword = try status(["RESTIC_HOST": "vm-status", "RESTIC_PASSWORD": "not-it"])
        XCTAssertEqual(wrongPassword.code, 1)
        assertLine(wrongPassword.text, "✗ repository: RESTIC_PASSWORD does not open the repository",
                   fix: "set RESTIC_PASSWORD to the password the repository was created with")

        let otherHost = try status(["RESTIC_HOST": "vm-never-backed-up"])
        assertLine(otherHost.text, "✗ snapshots: no snapshot of this host (vm-never-backed-up) yet", fix: "run `cloud-backup backup <dirs>`")

        let deadPort = try freeLoopbackPort()
        let unreachablePing = try status(["RESTIC_HOST": "vm-status", "BACKUP_CHECK_URL": "http://127.0.0.1:\(deadPort)/ping/x"])
        assertLine(unreachablePing.text, "✗ monitoring: BACKUP_CHECK_URL: cannot reach 127.0.0.1:\(deadPort) (Connection refused)",
                   fix: "check DNS, firewall or proxy towards 127.0.0.1")

        server.send(SIGTERM)
        _ = waitForExit(server, seconds: 10)
        let noServer = try status(["RESTIC_HOST": "vm-status"])
        XCTAssertEqual(noServer.code, 1)
        assertLine(noServer.text, "✗ REST server: nothing answers on 127.0.0.1:\(sandbox.port)", fix: "start it: `cloud-backup start-server`")
        assertLine(noServer.text, "✓ repository: initialised, password accepted (through the destination directly")

        // restic missing (rclone still there).
        let tools = sandbox.root + "/only-rclone"
        try FileManager.default.createDirectory(atPath: tools, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: tools + "/rclone", withDestinationPath: ExecutableLookup.resolve("rclone", environment: sandbox.environment)!)
        let noRestic = try status(["PATH": tools])
        assertLine(noRestic.text, "✗ restic: not found on PATH (\(tools))", fix: "install it (Debian/Ubuntu: apt-get install restic)")
        assertLine(noRestic.text, "✓ rclone: ")

        let badEnvironment = try status(["RESTIC_REST_PORT": "http"])
        XCTAssertEqual(badEnvironment.code, 1)
        assertLine(badEnvironment.text, "✗ environment: RESTIC_REST_PORT=http: expected a TCP port number", fix: "set the variables as described")
    }

    func testOldSnapshotMissingRepositoryAndUnreachableDestination() throws {
        let fresh = try status()
        assertLine(fresh.text, "✗ repository: no repository at \(sandbox.repository) yet", fix: "run `cloud-backup backup <dirs>`: the first backup creates it")
        assertLine(fresh.text, "✓ destination: \(sandbox.repository) will be created by the first backup")

        XCTAssertEqual(try sandbox.run(["backup", "--time", "2020-01-01 00:00:00", sandbox.data], ["RESTIC_HOST": "vm-old"]).status, .exited(0))
        let old = try status(["RESTIC_HOST": "vm-old"])
        assertLine(old.text, "✗ snapshots: latest snapshot of vm-old: ", fix: "the backup job is not running or failing")
        XCTAssertTrue(old.text.contains("days ago (older than SNAPSHOT_MAX_AGE_HOURS=48)"), old.text)

        let started = Date()
        // A remote that is defined but cannot be reached (nothing listens on port 9); its password
        // (obscured, as rclone wants it) stays out of the report.
        let remote = try status(["BACKUP_REMOTE": ":ftp,host=127.0.0.1,port=9,user=x,pass=wRUJSEVLuoSR2EcZUFYcLhS06R1IBUE5:bucket"])
        XCTAssertFalse(remote.text.contains("wRUJSEVLuoSR2EcZUFYcLhS06R1IBUE5"), remote.text)
        assertLine(remote.text, "✗ destination: ", fix: "check the remote's credentials and network")
        XCTAssertTrue(remote.text.contains("connection refused"), remote.text)
        let undefined = try status(["BACKUP_REMOTE": "nosuchremote:bucket"])
        assertLine(undefined.text, "✗ environment: ", fix: "set the variables as described")
        XCTAssertTrue(undefined.text.contains("didn't find section in config file"), undefined.text)
        XCTAssertLessThan(Date().timeIntervalSince(started), 60, "bounded even when parts fail")
    }
}
