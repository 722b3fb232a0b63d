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

    /// A URL for a remote, a signed port, a directory and a device for `*_FILE`s: all reported at once,
    /// before restic or rclone ever runs, in words (no "NSCocoaErrorDomain error 256"), and pinged to
    /// the check URL given through BACKUP_CHECK_URL_FILE without showing it.
    func testDestinationNumberAndFileProblemsAreCaughtBeforeAnythingRuns() throws {
        let calls = try RecordedCall.installWrappers(in: sandbox)
        let pings = try PingRecorder(in: sandbox)
        let checkID = "5d5d5d5d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"
        let urlFile = sandbox.root + "/check-url"
        try "\(pings.url(check: checkID))\n".write(toFile: urlFile, atomically: true, encoding: .utf8)
        let directory = sandbox.root + "/secrets"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let bad = [
            "BACKUP_REMOTE": "https://backup:url-secret-83@dav.example.org/backups",
            "RESTIC_REST_PORT": "+39555",
            "RESTIC_PASSWORD_FILE": directory,
            "FORGET_CHECK_URL_FILE": "/dev/null",
            "BACKUP_CHECK_URL_FILE": urlFile,
        ]
        let result = try sandbox.run(["backup", sandbox.data], bad, removing: ["RESTIC_PASSWORD"])
        XCTAssertEqual(result.status, .exited(78))
        let expected = [
            "the configuration is not valid (4 problems):",
            "BACKUP_REMOTE=https://backup:***@dav.example.org/backups: a URL is not an rclone path.",
            "RESTIC_REST_PORT=+39555: expected a TCP port number from 1 to 65535 (default 8080). Write the number in plain digits",
            "RESTIC_PASSWORD_FILE is set to a directory (\(directory)): point it to the file that holds the repository password.",
            "FORGET_CHECK_URL_FILE is set to a device (/dev/null)",
        ]
        for line in expected {
            XCTAssertTrue(result.standardError.contains(line), "missing «\(line)» in:\n\(result.standardError)")
        }
        XCTAssertFalse(result.standardError.contains("NSCocoaErrorDomain"), result.standardError)
        XCTAssertFalse(result.standardError.contains("url-secret-83"), result.standardError)
        XCTAssertEqual(pings.pings.map(\.path), ["/ping/\(checkID)/78"], "the URL from BACKUP_CHECK_URL_FILE is pinged")
        XCTAssertTrue(pings.pings.first?.body.hasPrefix("not run: the configuration is not valid") == true)
        XCTAssertFalse(pings.pings.contains { $0.body.contains(checkID) || $0.body.contains("url-secret-83") })

        // An undefined remote (the defined ones are listed) and a password file of whitespace.
        try "[store]\ntype = local\n".write(toFile: sandbox.environment["RCLONE_CONFIG"]!, atomically: true, encoding: .utf8)
        let blank = sandbox.root + "/blank-password"
        try "  \t\n".write(toFile: blank, atomically: true, encoding: .utf8)
        let undefined = try sandbox.run(["backup", sandbox.data], ["BACKUP_REMOTE": "nosuchremote:repo", "RCLONE_CONFIG_ENVREMOTE_TYPE": "local",
                                                                  "RESTIC_PASSWORD_FILE": blank], removing: ["RESTIC_PASSWORD"])
        XCTAssertEqual(undefined.status, .exited(78))
        for line in ["BACKUP_REMOTE=nosuchremote:repo: no rclone remote named nosuchremote is defined",
                     "RCLONE_CONFIG=\(sandbox.environment["RCLONE_CONFIG"]!) defines store; the environment defines envremote",
                     "RESTIC_PASSWORD_FILE=\(blank): the file holds only whitespace"] {
            XCTAssertTrue(undefined.standardError.contains(line), "missing «\(line)» in:\n\(undefined.standardError)")
        }

        // Whitespace around the remote stops start-server too.
        // (Launched: a start-server that wrongly accepts the value would serve until stopped.)
        let (server, log) = try sandbox.launch(["start-server"], ["BACKUP_REMOTE": "store:repo "], log: "spaced")
        XCTAssertEqual(waitForExit(server, seconds: 10)?.status, .exited(78))
        XCTAssertTrue(sandbox.readLog(log).contains("BACKUP_REMOTE=\"store:repo \" has leading or trailing whitespace"), sandbox.readLog(log))
        XCTAssertEqual(RecordedCall.read(calls).map(\.arguments), [], "neither restic nor rclone ran")
    }
}
