import Foundation
import XCTest
import TestSupport
@testable import CloudBackupCore

/// A real rclone remote that can fail: WebDAV served by `rclone serve webdav` on loopback, over a
/// directory that holds an existing repository. When the remote is down, or refuses the credentials
/// (which through `rclone serve restic` looks exactly like "no repository"), nothing may be initialised
/// and the existing repository must stay intact.
final class DestinationFailureTests: SandboxTestCase {
    var davDirectory: String { sandbox.root + "/dav" }
    var davPort = 0

    override func setUpWithError() throws {
        try super.setUpWithError()
        davPort = try freeLoopbackPort()
        try FileManager.default.createDirectory(atPath: davDirectory, withIntermediateDirectories: true)
        try writeRemote(password: "dav-secret-5521")
        sandbox.environment["BACKUP_REMOTE"] = "dav:repo"
    }

    func writeRemote(password: String) throws {
        let obscured = try sandbox.runner.run(ProcessSpec(executable: "sh", arguments: ["-c", "printf '%s' \"$P\" | rclone obscure -"],
                                                          environment: sandbox.environment.merging(["P": password]) { $1 }))
        let config = """
        [dav]
        type = webdav
        url = http://127.0.0.1:\(davPort)/
        vendor = other
        user = dav-user
        pass = \(obscured.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines))

        """
        try config.write(toFile: sandbox.environment["RCLONE_CONFIG"]!, atomically: true, encoding: .utf8)
    }

    func startWebDAV(password: String = "dav-secret-5521") throws -> any RunningProcess {
        let server = try sandbox.launchProgram("rclone", ["serve", "webdav", davDirectory, "--addr", "127.0.0.1:\(davPort)"],
                                               ["RCLONE_USER": "dav-user", "RCLONE_PASS": password], log: "webdav")
        try waitFor("the WebDAV server", seconds: 20) {
            RestServerProbe.headStatus(host: "127.0.0.1", port: self.davPort, path: "/", credentials: nil, timeout: 1) != nil
        }
        return server
    }

    /// Every file under the WebDAV directory with its size: what "intact" means here.
    func inventory() -> [String: Int] {
        var result: [String: Int] = [:]
        let enumerator = FileManager.default.enumerator(atPath: davDirectory)
        while let path = enumerator?.nextObject() as? String {
            let attributes = try? FileManager.default.attributesOfItem(atPath: davDirectory + "/" + path)
            if attributes?[.type] as? FileAttributeType == .typeRegular {
                result[path] = (attributes?[.size] as? NSNumber)?.intValue ?? -1
            }
        }
        return result
    }

    func makeExistingRepository() throws {
        try sandbox.writeData(files: 5)
        let first = try sandbox.run(["backup", sandbox.data])
        XCTAssertEqual(first.status, .exited(0), first.standardError)
        XCTAssertTrue(first.standardError.contains("backup using the destination directly (rclone:dav:repo)"), first.standardError)
        XCTAssertTrue(first.standardError.contains("creating it with `restic init`"), first.standardError)
        XCTAssertTrue(FileManager.default.fileExists(atPath: davDirectory + "/repo/config"))
    }

    func assertRepositoryIntact(_ before: [String: Int], file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(inventory(), before, "the destination changed", file: file, line: line)
        let check = try sandbox.restic(["check"], repository: davDirectory + "/repo")
        XCTAssertEqual(check.status, .exited(0), check.standardError, file: file, line: line)
        XCTAssertEqual(try sandbox.snapshotIDs(repository: davDirectory + "/repo").count, 1, file: file, line: line)
    }

    func testUnreachableRemoteFailsWithoutInitialising() throws {
        let dav = try startWebDAV()
        try makeExistingRepository()
        let before = inventory()
        dav.send(SIGKILL)
        _ = dav.wait()

        let pings = try PingRecorder(in: sandbox)
        let result = try sandbox.run(["backup", sandbox.data], ["BACKUP_CHECK_URL": pings.url()])
        XCTAssertNotEqual(result.status, .exited(0))
        XCTAssertFalse(result.standardError.contains("creating it"), result.standardError)
        XCTAssertTrue(result.standardError.contains("connection refused"), result.standardError)
        XCTAssertTrue(pings.pings.last!.body.contains("backup failed"), pings.pings.last!.body)

        _ = try startWebDAV()
        try assertRepositoryIntact(before)
    }

    func testRefusedCredentialsThroughTheServerNeverInitialise() throws {
        let dav = try startWebDAV()
        try makeExistingRepository()
        let before = inventory()
        let (server, _) = try sandbox.startServer()
        // The WebDAV password is changed under the running server: rclone serve restic now answers 404
        // for `config`, and restic says the repository does not exist.
        dav.send(SIGKILL)
        _ = dav.wait()
        _ = try startWebDAV(password: "rotated-password")
        let pings = try PingRecorder(in: sandbox)

        let result = try sandbox.run(["backup", sandbox.data], ["BACKUP_CHECK_URL": pings.url()])
        XCTAssertEqual(result.status, .exited(69), result.standardError)
        XCTAssertTrue(result.standardError.contains("backup using the REST server"), result.standardError)
        XCTAssertTrue(result.standardError.contains("cannot reach the backup destination dav:repo"), result.standardError)
        XCTAssertTrue(result.standardError.contains("401 Unauthorized"), result.standardError)
        XCTAssertTrue(result.standardError.contains("so it was not initialised"), result.standardError)
        XCTAssertFalse(result.standardError.contains("restic init"), result.standardError)
        XCTAssertEqual(pings.pings.last?.path, "/ping/2b8a4c0e-1d2f-4e5a-9b6c-7d8e9f0a1b2c/69")
        XCTAssertFalse(pings.pings.last!.body.contains("dav-secret"), "no secret in the ping")

        server.send(SIGTERM)
        _ = waitForExit(server, seconds: 10)
        try assertRepositoryIntact(before)
    }

    func testAServerWhoseRemoteRefusesCredentialsGivesUpWithTheReason() throws {
        _ = try startWebDAV(password: "rotated-password")
        let result = try sandbox.run(["start-server"], ["CLOUD_BACKUP_SERVER_MAX_QUICK_FAILURES": "2"])
        XCTAssertEqual(result.status, .exited(69))
        XCTAssertTrue(result.standardError.contains("rclone serve restic failed 2 times in a row before it could serve"), result.standardError)
        XCTAssertTrue(result.standardError.contains("401 Unauthorized"), result.standardError)
        XCTAssertEqual(inventory(), [:], "nothing was written")
    }

    func testAnUndefinedRemoteIsExplained() throws {
        sandbox.environment["BACKUP_REMOTE"] = "nosuchremote:repo"
        try sandbox.writeData(files: 1)
        let result = try sandbox.run(["backup", sandbox.data])
        XCTAssertNotEqual(result.status, .exited(0))
        XCTAssertTrue(result.standardError.contains("didn't find section in config file"), result.standardError)
        XCTAssertFalse(result.standardError.contains("restic init"))
    }
}
