import XCTest
@testable import CloudBackupCore

final class SubcommandTests: XCTestCase {
    func testParsing() throws {
        XCTAssertEqual(try Subcommand.parse([]), .help(topic: nil))
        XCTAssertEqual(try Subcommand.parse(["--help"]), .help(topic: nil))
        XCTAssertEqual(try Subcommand.parse(["help", "backup"]), .help(topic: "backup"))
        XCTAssertEqual(try Subcommand.parse(["backup", "--help"]), .help(topic: "backup"))
        XCTAssertEqual(try Subcommand.parse(["backup", "--tag", "x", "/d"]), .backup(["--tag", "x", "/d"]))
        XCTAssertEqual(try Subcommand.parse(["forget", "--keep-within", "1m", "--prune"]), .forget(["--keep-within", "1m", "--prune"]))
        XCTAssertEqual(try Subcommand.parse(["restic", "--help"]), .restic(["--help"]))
        XCTAssertEqual(try Subcommand.parse(["start-server"]), .startServer)
        XCTAssertEqual(try Subcommand.parse(["server-status"]), .serverStatus)
        XCTAssertEqual(try Subcommand.parse(["--version"]), .version)
        XCTAssertEqual(try Subcommand.parse(["config"]), .config)
        XCTAssertEqual(try Subcommand.parse(["reauth"]), .reauth)
        XCTAssertEqual(try Subcommand.parse(["check-refresh-token"]), .checkRefreshToken)
        XCTAssertEqual(try Subcommand.parse(["aws-credential-process"]), .credentialProcess)
        XCTAssertEqual(try Subcommand.parse(["config", "--help"]), .help(topic: "config"))
    }

    func testUsageErrors() {
        XCTAssertThrowsError(try Subcommand.parse(["bakup"])) { error in
            XCTAssertEqual((error as? CloudBackupError)?.exitCode, 64)
            XCTAssertTrue("\(error)".contains("Did you mean `backup`?"), "\(error)")
        }
        XCTAssertThrowsError(try Subcommand.parse(["start-server", "--port", "1"])) { error in
            XCTAssertTrue("\(error)".contains("start-server takes no arguments"))
        }
    }

    func testEveryTopicHasHelp() {
        for name in Subcommand.names + ["aws-credential-process"] {
            XCTAssertNotNil(HelpText.text(for: name), name)
        }
        XCTAssertNil(HelpText.text(for: "nope"))
    }

    func testContainerIdLooks() {
        XCTAssertTrue(looksLikeContainerID("4f9c2a1b3d5e"))
        XCTAssertFalse(looksLikeContainerID("backup-vm-01"))
        XCTAssertFalse(looksLikeContainerID("4F9C2A1B3D5E"))
    }
}

final class BoundedBufferTests: XCTestCase {
    func append(_ buffer: inout BoundedBuffer, _ text: String) { buffer.append(text) }

    func testTailKeepsTheEndFromALineStart() {
        var buffer = BoundedBuffer(limit: 20, keep: .tail)
        for index in 1...100 { append(&buffer, "line \(index)\n") }
        XCTAssertEqual(buffer.text, "line 99\nline 100\n")
        XCTAssertTrue(buffer.wasCut)
    }

    func testHeadKeepsTheBeginning() {
        var buffer = BoundedBuffer(limit: 5, keep: .head)
        append(&buffer, "abc")
        append(&buffer, "defgh")
        XCTAssertEqual(buffer.text, "abcde")
    }

    func testUncutTailIsWhole() {
        var buffer = BoundedBuffer(limit: 100, keep: .tail)
        append(&buffer, "one\ntwo")
        XCTAssertEqual(buffer.text, "one\ntwo")
        XCTAssertFalse(buffer.wasCut)
    }
}

final class DestinationInspectorTests: XCTestCase {
    func testListings() {
        XCTAssertEqual(DestinationInspector.interpretListing(ProcessResult(status: .exited(0), standardOutput: "[]")), .listed(names: []))
        XCTAssertEqual(DestinationInspector.interpretListing(ProcessResult(status: .exited(0), standardOutput: #"[{"Name":"config"}]"#)), .listed(names: ["config"]))
        XCTAssertEqual(DestinationInspector.interpretListing(ProcessResult(status: .exited(3))), .listed(names: []))
        XCTAssertEqual(DestinationInspector.interpretListing(ProcessResult(status: .exited(0), standardOutput: "garbage")),
                       .unreadable(reason: "rclone lsjson printed something that is not a listing"))
        XCTAssertEqual(DestinationInspector.interpretListing(ProcessResult(status: .exited(1), standardError: "2026/11/22 02:09:39 CRITICAL: Failed to create file system for \"x:\": didn't find section in config file\n")),
                       .unreadable(reason: "CRITICAL: Failed to create file system for \"x:\": didn't find section in config file"))
    }

    func testRcloneArgv() {
        XCTAssertEqual(RcloneCommand.serveRestic(path: "r:b", listenAddress: "127.0.0.1:8080", appendOnly: true),
                       ["serve", "restic", "r:b", "--addr", "127.0.0.1:8080", "--append-only"])
        XCTAssertEqual(RcloneCommand.listenAddress(port: 8080, authenticated: false), "127.0.0.1:8080")
        XCTAssertEqual(RcloneCommand.listenAddress(port: 8080, authenticated: true), ":8080")
        let environment = RcloneCommand.serveEnvironment(base: ["RCLONE_USER": "stray", "X": "y"], credentials: nil)
        XCTAssertNil(environment["RCLONE_USER"])
        let authenticated = RcloneCommand.serveEnvironment(base: [:], credentials: RestCredentials(username: "u", password: "p"))
        XCTAssertEqual(authenticated["RCLONE_USER"], "u")
        XCTAssertEqual(authenticated["RCLONE_PASS"], "p")
    }
}
