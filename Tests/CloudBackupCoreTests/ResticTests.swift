import XCTest
@testable import CloudBackupCore

final class ResticCommandTests: XCTestCase {
    func testBackupAddsHostUnlessTheUserGaveOne() {
        XCTAssertEqual(ResticCommand.backup(userArguments: ["--tag", "x", "/data"], host: "vm1"),
                       ["backup", "--host", "vm1", "--tag", "x", "/data"])
        XCTAssertEqual(ResticCommand.backup(userArguments: ["/data"], host: nil), ["backup", "/data"])
        XCTAssertEqual(ResticCommand.backup(userArguments: ["--host", "other", "/data"], host: "vm1"), ["backup", "--host", "other", "/data"])
        XCTAssertEqual(ResticCommand.backup(userArguments: ["--host=other", "/d"], host: "vm1"), ["backup", "--host=other", "/d"])
        XCTAssertEqual(ResticCommand.backup(userArguments: ["-H", "other", "/d"], host: "vm1"), ["backup", "-H", "other", "/d"])
    }

    func testForgetFiltersOnHost() {
        XCTAssertEqual(ResticCommand.forget(userArguments: ["--keep-within", "1m", "--prune"], host: "vm1"),
                       ["forget", "--host", "vm1", "--keep-within", "1m", "--prune"])
    }

    func testRepositoryURLs() {
        XCTAssertEqual(RepositoryRoute.restServer(port: 8080, credentials: nil).repositoryURL, "rest:http://127.0.0.1:8080/")
        XCTAssertEqual(RepositoryRoute.restServer(port: 9000, credentials: RestCredentials(username: "u", password: "p@ss:/w%rd")).repositoryURL,
                       "rest:http://u:p%40ss%3A%2Fw%25rd@127.0.0.1:9000/")
        XCTAssertEqual(RepositoryRoute.direct(.rcloneRemote("r:b")).repositoryURL, "rclone:r:b")
        XCTAssertFalse(RepositoryRoute.restServer(port: 1, credentials: RestCredentials(username: "u", password: "secret")).description.contains("secret"))
    }

    func testEnvironmentCarriesTheRepositoryAndDropsARepositoryFile() {
        let environment = ResticCommand.environment(base: ["RESTIC_REPOSITORY_FILE": "/x", "A": "b"], route: .direct(.localDirectory("/r", isDefault: true)))
        XCTAssertEqual(environment["RESTIC_REPOSITORY"], "/r")
        XCTAssertNil(environment["RESTIC_REPOSITORY_FILE"])
        XCTAssertEqual(environment["A"], "b")
    }
}

final class ResticOutcomeTests: XCTestCase {
    func classify(_ code: Int32, _ text: String) -> ResticOutcome {
        ResticOutcome.classify(status: .exited(code), output: text)
    }

    func testRestic014Texts() {
        XCTAssertEqual(classify(0, ""), .success)
        XCTAssertEqual(classify(3, "Warning: at least one source file could not be read"), .incompleteSnapshot)
        XCTAssertEqual(classify(1, "Fatal: wrong password or no key found\n"), .wrongPassword)
        XCTAssertEqual(classify(1, "Fatal: unable to open config file: stat /r/config: no such file or directory\nIs there a repository at the following location?\n/r\n"), .repositoryMissing)
        XCTAssertEqual(classify(1, "Fatal: unable to open config file: <config/> does not exist\nIs there a repository at the following location?\nrest:http://127.0.0.1:8080/\n"), .repositoryMissing)
        let locked = "unable to create lock in backend: repository is already locked exclusively by PID 4242 on vm1 by root (UID 0, GID 0)\nlock was created at 2026-11-22 02:00:00 (1m0s ago)\nstorage ID 1234abcd\nthe `unlock` command can be used to remove stale locks\n"
        XCTAssertEqual(classify(1, locked), .locked(holder: "locked exclusively by PID 4242 on vm1 by root (UID 0, GID 0)"))
        XCTAssertEqual(classify(1, "Fatal: unable to open config file: Head \"http://127.0.0.1:8080/config\": dial tcp 127.0.0.1:8080: connect: connection refused\nIs there a repository at the following location?\n"),
                       .unreachable(reason: "unable to open config file: Head \"http://127.0.0.1:8080/config\": dial tcp 127.0.0.1:8080: connect: connection refused"))
        XCTAssertEqual(classify(1, "Fatal: all source directories/files do not exist\n"), .failed(reason: "all source directories/files do not exist"))
        XCTAssertEqual(classify(1, "something odd\n\n"), .failed(reason: "something odd"))
        XCTAssertEqual(classify(130, ""), .interrupted)
    }

    func testRestic017Codes() {
        XCTAssertEqual(classify(10, "Fatal: repository does not exist: unable to open config file"), .repositoryMissing)
        XCTAssertEqual(classify(11, "repo already locked, waiting up to 0s for the lock\nunable to create lock in backend: repository is already locked by PID 1 on h by u (UID 0, GID 0)"),
                       .locked(holder: "locked by PID 1 on h by u (UID 0, GID 0)"))
        XCTAssertEqual(classify(12, "Fatal: wrong password or no key found"), .wrongPassword)
        XCTAssertEqual(classify(130, "signal interrupt received, cleaning up"), .interrupted)
        XCTAssertEqual(classify(42, "Fatal: new in a future version"), .failed(reason: "new in a future version"))
    }

    func testSignals() {
        XCTAssertEqual(ResticOutcome.classify(status: .signaled(SIGINT), output: ""), .interrupted)
        XCTAssertEqual(ResticOutcome.classify(status: .signaled(SIGKILL), output: ""), .failed(reason: "restic was killed by SIGKILL"))
    }
}

final class BackupSummaryTests: XCTestCase {
    func testRestic014Text() {
        let output = """
        open repository
        no parent snapshot found, will read all files

        Files:         120 new,     3 changed,  4567 unmodified
        Dirs:            2 new,     0 changed,     0 unmodified
        Added to the repo: 1.234 MiB

        processed 4690 files, 12.345 GiB in 1:02
        snapshot 1a2b3c4d saved
        """
        let summary = BackupSummary.parse(output)
        XCTAssertEqual(summary, BackupSummary(snapshotID: "1a2b3c4d", filesNew: 120, filesChanged: 3, filesUnmodified: 4567,
                                              dataAdded: "1.234 MiB", processed: "processed 4690 files, 12.345 GiB in 1:02"))
        XCTAssertEqual(summary.oneLine, "snapshot 1a2b3c4d saved; files: 120 new, 3 changed, 4567 unmodified; added 1.234 MiB; processed 4690 files, 12.345 GiB in 1:02")
    }

    func testRestic018Text() {
        let summary = BackupSummary.parse("Added to the repository: 1.388 KiB (1.224 KiB stored)\nsnapshot 826f132d saved\n")
        XCTAssertEqual(summary.dataAdded, "1.388 KiB (1.224 KiB stored)")
        XCTAssertEqual(summary.snapshotID, "826f132d")
    }

    func testJSONSummary() {
        let line = #"{"message_type":"summary","files_new":2,"files_changed":1,"files_unmodified":0,"data_added":1048576,"total_files_processed":3,"total_bytes_processed":2097152,"total_duration":1.5,"snapshot_id":"0123456789abcdef"}"#
        let summary = BackupSummary.parse("{\"message_type\":\"status\"}\n" + line + "\n")
        XCTAssertEqual(summary.snapshotID, "01234567")
        XCTAssertEqual(summary.filesNew, 2)
        XCTAssertEqual(summary.dataAdded, "1.000 MiB")
        XCTAssertEqual(summary.processed, "processed 3 files, 2.000 MiB in 1.5 s")
    }

    func testNothingToSummarise() {
        XCTAssertTrue(BackupSummary.parse("Fatal: nope\n").isEmpty)
    }
}
