import XCTest
@testable import CloudBackupCore

/// restic's lines as log readers see them, and the job's summaries.
final class ResticMessagesTests: XCTestCase {
    func testJSONErrorsBecomeSentences() {
        let error = #"{"message_type":"error","error":{"Op":"open","Path":"data/private","Err":13},"during":"archival","item":"/srv/data/private"}"#
        XCTAssertEqual(ResticMessages.readable(Substring(error)), "error: permission denied: /srv/data/private (open, during archival)")
        let exit = #"{"message_type":"exit_error","code":12,"message":"Fatal: wrong password or no key found"}"#
        XCTAssertEqual(ResticMessages.readable(Substring(exit)), "Fatal: wrong password or no key found")
        let message = #"{"message_type":"error","error":{"message":"read /srv/x: input/output error"},"during":"archival","item":"/srv/x"}"#
        XCTAssertEqual(ResticMessages.readable(Substring(message)), "error: input/output error: /srv/x (read, during archival)")
        let other = #"{"message_type":"error","error":{"message":"file /srv/y changed during backup"},"during":"archival","item":"/srv/y"}"#
        XCTAssertEqual(ResticMessages.readable(Substring(other)), "error: file /srv/y changed during backup (during archival)")
    }

    func testTerminalControlsAreRemoved() {
        XCTAssertEqual(ResticMessages.stripTerminalControls("\u{1B}[2K\r[0:01] 10 files\u{1B}[1A"), "[0:01] 10 files")
        XCTAssertNil(ResticMessages.readable("\u{1B}[2K\r"))
        XCTAssertEqual(ResticMessages.readable("plain line"), "plain line")
    }

    func testUnreadableFilesFromTextJSONAndOurOwnSentences() {
        let text = "error: open /srv/a: permission denied\nerror: lstat /srv/b: no such file or directory\nWarning: at least one source file could not be read\n"
        XCTAssertEqual(ResticMessages.unreadableFiles(in: text).files, ["permission denied: /srv/a (open)", "no such file or directory: /srv/b (lstat)"])
        let ours = "error: permission denied: /srv/a (open, during archival)\n"
        XCTAssertEqual(ResticMessages.unreadableFiles(in: ours).files, ["permission denied: /srv/a (open, during archival)"])
        let many = (0..<8).map { "error: open /srv/\($0): permission denied" }.joined(separator: "\n")
        let (files, more) = ResticMessages.unreadableFiles(in: many)
        XCTAssertEqual(files.count, 5)
        XCTAssertEqual(more, 3)
        XCTAssertTrue(ResticJob.unreadableFilesSentence(many).hasPrefix("8 files could not be read: permission denied: /srv/0 (open)"))
    }

    func testForgetCountsSnapshotsNotGroups() {
        let output = """
            Applying Policy: keep 1 latest snapshots
            keep 1 snapshots:
            ID        Time
            remove 2 snapshots:
            ID        Time
            keep 3 snapshots:
            remove 1 snapshots:
            """
        XCTAssertEqual(ResticJob.forgetCounts(output)?.removed, 3)
        XCTAssertEqual(ResticJob.forgetCounts(output)?.kept, 4)
        XCTAssertNil(ResticJob.forgetCounts("no snapshots were found\n"))
    }

    func testTheServersBackendErrorsAreRecognised() {
        XCTAssertEqual(RcloneLogWatcher.backendError(in: "2026/12/03 16:00:57 ERROR : locks/f3: Post request put error: open /r/locks/f3: read-only file system"),
                       "ERROR : locks/f3: Post request put error: open /r/locks/f3: read-only file system")
        XCTAssertEqual(RcloneLogWatcher.backendError(in: "cloud-backup: error: aws-credential-process: the INFN Cloud login has expired. To fix: run reauth."),
                       "the INFN credential process failed: the INFN Cloud login has expired. To fix: run reauth.")
        XCTAssertNil(RcloneLogWatcher.backendError(in: "2026/12/03 16:00:57 NOTICE: Serving restic REST API on http://127.0.0.1:8080/"))
    }
}
