import Foundation
import XCTest
@testable import CloudBackupCore

/// Bad input, end to end: every malformed value is reported at once with exit 78, usage errors exit 64,
/// nothing is created, and a failure ping goes out when the check URL itself is usable.
final class ConfigurationErrorTests: SandboxTestCase {
    func testEveryBadValueIsReportedAtOnceAndPinged() throws {
        let pings = try PingRecorder(in: sandbox)
        let bad = [
            "RESTIC_REST_PORT": "99999",
            "LOCK_WAIT_SECONDS": "ten",
            "STOP_GRACE_SECONDS": "0",
            "PING_TIMEOUT_SECONDS": "-1",
            "RESTIC_REST_APPEND_ONLY": "perhaps",
            "RESTIC_REST_USERNAME": "only-user",
            "FORGET_CHECK_URL": "mailto:admin@example.org",
            "BACKUP_REMOTE": "backups",
            "RESTIC_HOST": "two words",
            "BACKUP_CHECK_URL": pings.url(),
        ]
        let result = try sandbox.run(["backup", sandbox.data], bad, removing: ["RESTIC_PASSWORD"])
        XCTAssertEqual(result.status, .exited(78))
        let expected = [
            "the configuration is not valid (10 problems):",
            "RESTIC_PASSWORD is not set",
            "RESTIC_REST_PORT=99999: expected a TCP port number from 1 to 65535 (default 8080).",
            "LOCK_WAIT_SECONDS=ten: expected a number of seconds from 0 to 86400 (default 900).",
            "STOP_GRACE_SECONDS=0: expected a number of seconds from 1 to 300 (default 8).",
            "PING_TIMEOUT_SECONDS=-1: expected a number of seconds from 1 to 60 (default 10).",
            "RESTIC_REST_APPEND_ONLY=perhaps: expected true or false (default false).",
            "RESTIC_REST_USERNAME is set but RESTIC_REST_PASSWORD is not",
            "FORGET_CHECK_URL: expected an http(s) Healthchecks ping URL",
            "BACKUP_REMOTE=backups: expected an rclone path like `myremote:bucket/path`",
            "RESTIC_HOST=two words: must not contain spaces",
        ]
        for line in expected {
            XCTAssertTrue(result.standardError.contains(line), "missing «\(line)» in:\n\(result.standardError)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: sandbox.repository), "nothing was created")
        XCTAssertEqual(pings.pings.map(\.path), ["/ping/2b8a4c0e-1d2f-4e5a-9b6c-7d8e9f0a1b2c/78"])
        XCTAssertTrue(pings.pings[0].body.hasPrefix("not run: the configuration is not valid"), pings.pings[0].body)
    }

    func testMissingSecretFile() throws {
        let result = try sandbox.run(["forget", "--keep-last", "1"], ["RESTIC_PASSWORD_FILE": sandbox.root + "/no-such-file"], removing: ["RESTIC_PASSWORD"])
        XCTAssertEqual(result.status, .exited(78))
        XCTAssertTrue(result.standardError.contains("RESTIC_PASSWORD_FILE=\(sandbox.root)/no-such-file: cannot read the file"), result.standardError)
    }

    func testSecretsFromFilesWork() throws {
        try sandbox.writeData(files: 1)
        let passwordFile = sandbox.root + "/password"
        try "from-a-file-4d2e\n".write(toFile: passwordFile, atomically: true, encoding: .utf8)
        let result = try sandbox.run(["backup", sandbox.data], ["RESTIC_PASSWORD_FILE": passwordFile], removing: ["RESTIC_PASSWORD"])
        XCTAssertEqual(result.status, .exited(0), result.standardError)
        XCTAssertEqual(try sandbox.restic(["snapshots", "--no-lock"], password: "from-a-file-4d2e").status, .exited(0))
    }

    func testUsageErrorsAndHelp() throws {
        let unknown = try sandbox.run(["bakup"])
        XCTAssertEqual(unknown.status, .exited(64))
        XCTAssertTrue(unknown.standardError.contains("unknown subcommand or option bakup. Did you mean `backup`?"), unknown.standardError)
        for topic in ["--help", "help", "start-server --help", "backup --help", "forget --help", "server-status --help", "help restic"] {
            let help = try sandbox.run(topic.split(separator: " ").map(String.init))
            XCTAssertEqual(help.status, .exited(0), topic)
            XCTAssertTrue(help.standardOutput.hasPrefix(topic.contains(" ") ? "Usage: cloud-backup" : "cloud-backup "), "\(topic): \(help.standardOutput)")
        }
        let reauth = try sandbox.run(["reauth"])
        XCTAssertEqual(reauth.status, .exited(64))
        XCTAssertTrue(reauth.standardError.contains("reauth is for INFN Cloud storage"), reauth.standardError)
    }

    func testMissingResticIsUnavailableAndPinged() throws {
        let pings = try PingRecorder(in: sandbox)
        let result = try sandbox.run(["backup", sandbox.data], ["PATH": "/nonexistent", "BACKUP_CHECK_URL": pings.url()])
        XCTAssertEqual(result.status, .exited(69))
        XCTAssertTrue(result.standardError.contains("restic was not found on PATH (/nonexistent)"), result.standardError)
        XCTAssertEqual(pings.pings.last?.path, "/ping/2b8a4c0e-1d2f-4e5a-9b6c-7d8e9f0a1b2c/69")
    }
}
