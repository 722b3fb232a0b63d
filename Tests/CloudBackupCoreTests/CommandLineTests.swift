import XCTest
@testable import CloudBackupCore

final class SubcommandTests: XCTestCase {
    func parse(_ arguments: [String]) throws -> ParsedCommandLine { try ParsedCommandLine.parse(arguments) }

    func testParsing() throws {
        XCTAssertEqual(try parse([]), .help(topic: nil))
        XCTAssertEqual(try parse(["--help"]), .help(topic: nil))
        XCTAssertEqual(try parse(["help", "backup"]), .help(topic: "backup"))
        XCTAssertEqual(try parse(["backup", "--help"]), .help(topic: "backup"))
        XCTAssertEqual(try parse(["backup", "--tag", "x", "/d"]), .run(name: "backup", arguments: ["--tag", "x", "/d"]))
        XCTAssertEqual(try parse(["forget", "--keep-within", "1m", "--prune"]), .run(name: "forget", arguments: ["--keep-within", "1m", "--prune"]))
        XCTAssertEqual(try parse(["restic", "--help"]), .run(name: "restic", arguments: ["--help"]), "restic's own help")
        XCTAssertEqual(try parse(["start-server"]), .run(name: "start-server", arguments: []))
        XCTAssertEqual(try parse(["status", "--json"]), .run(name: "status", arguments: ["--json"]))
        XCTAssertEqual(try parse(["--version"]), .version)
        XCTAssertEqual(try parse(["aws-credential-process"]), .run(name: "aws-credential-process", arguments: []))
        XCTAssertEqual(try parse(["config", "--help"]), .help(topic: "config"))
    }

    func testUsageErrors() {
        XCTAssertThrowsError(try parse(["bakup"])) { error in
            XCTAssertEqual((error as? CloudBackupError)?.exitCode, 64)
            XCTAssertTrue("\(error)".contains("Did you mean `backup`?"), "\(error)")
        }
        XCTAssertThrowsError(try parse(["start-server", "--port", "1"])) { error in
            XCTAssertTrue("\(error)".contains("start-server takes no arguments"))
        }
        XCTAssertThrowsError(try parse(["status", "--verbose"])) { error in
            XCTAssertTrue("\(error)".contains("status takes only --json"))
        }
        XCTAssertThrowsError(try parse(["aws-credential-proces"])) { error in
            XCTAssertFalse("\(error)".contains("Did you mean"), "hidden commands are not suggested")
        }
    }

    func testEveryCommandIsDefinedOnceWithHelpAndEveryVisibleOneIsInTheOverview() {
        let names = Commands.all.map(\.name)
        XCTAssertEqual(names.count, Set(names).count)
        let overview = HelpText.text(for: nil) ?? ""
        for command in Commands.all {
            XCTAssertEqual(HelpText.text(for: command.name), command.help)
            XCTAssertTrue(command.help.hasPrefix("Usage: cloud-backup \(command.name)"), command.name)
            XCTAssertEqual(overview.contains("  \(command.name)"), !command.hidden, command.name)
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
