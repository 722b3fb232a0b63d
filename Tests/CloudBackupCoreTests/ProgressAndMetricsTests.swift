import XCTest
@testable import CloudBackupCore
import TestSupport

final class BackupProgressReporterTests: XCTestCase {
    final class Clock: @unchecked Sendable {
        var now = Date(timeIntervalSince1970: 1_000)
    }

    func status(_ percent: Double, _ elapsed: Int) -> Substring {
        Substring(#"{"message_type":"status","percent_done":\#(percent),"total_files":3000,"files_done":\#(Int(percent * 3000)),"total_bytes":3221225472,"bytes_done":\#(Int(percent * 3221225472)),"seconds_elapsed":\#(elapsed),"seconds_remaining":125}"#)
    }

    func testProgressAtTheIntervalThenTheSummary() {
        let clock = Clock()
        let out = LineCollector()
        let errors = LineCollector()
        let reporter = BackupProgressReporter(interval: 60, now: { clock.now }, writeOut: { out.add($0) }, writeError: { errors.add($0) })
        reporter.handleOutput(status(0.1, 5))          // too early
        clock.now += 61
        reporter.handleOutput(status(0.42, 61))        // due
        clock.now += 10
        reporter.handleOutput(status(0.5, 71))         // too early again
        reporter.handleOutput("plain text line")
        reporter.handleOutput(#"{"message_type":"summary","files_new":2,"files_changed":1,"files_unmodified":7,"dirs_new":1,"dirs_changed":0,"dirs_unmodified":0,"data_added":2048,"total_files_processed":10,"total_bytes_processed":4096,"total_duration":65.2,"snapshot_id":"0123456789abcdef0123"}"#)
        reporter.handleError(#"{"message_type":"error","error":{"message":"open /data/x: permission denied"},"during":"archival","item":"/data/x"}"#)
        reporter.handleError("Fatal: plain")
        XCTAssertEqual(out.text, """
            progress: 42.0% done, 1.260 GiB of 3.000 GiB, 1260 of 3000 files, 21.151 MiB/s, ETA 2:05, elapsed 1:01
            plain text line
            Files:           2 new,     1 changed,     7 unmodified
            Dirs:            1 new,     0 changed,     0 unmodified
            Added to the repository: 2.000 KiB
            processed 10 files, 4.000 KiB in 1:05
            snapshot 01234567 saved

            """)
        XCTAssertEqual(errors.text, "error: permission denied: /data/x (open, during archival)\nFatal: plain\n")
        XCTAssertEqual(reporter.summary?.filesNew, 2)
        XCTAssertEqual(reporter.summary?.dataAdded, 2048)
        XCTAssertEqual(BackupSummary.parse(reporter.shownOutput).oneLine,
                       "snapshot 01234567 saved; files: 2 new, 1 changed, 7 unmodified; added 2.000 KiB; processed 10 files, 4.000 KiB in 1:05")
        XCTAssertTrue(reporter.errorOutput.contains("Fatal: plain"))
    }

    func testRestic018PackedSize() {
        let statistics = BackupStatistics.parse(jsonLine: #"{"message_type":"summary","data_added":2048,"data_added_packed":1024,"snapshot_id":"ab"}"#)
        XCTAssertEqual(statistics?.readableLines[2], "Added to the repository: 2.000 KiB (1.000 KiB stored)")
    }

    func testClock() {
        XCTAssertEqual(clock(5), "0:05")
        XCTAssertEqual(clock(3725), "1:02:05")
    }
}

final class JobMetricsTests: XCTestCase {
    func testRenderedMetricsFollowTheTextFormat() throws {
        let statistics = BackupStatistics(snapshotID: "x", filesNew: 3, filesChanged: 2, filesUnmodified: 1, dirsNew: 0, dirsChanged: 0,
                                          dirsUnmodified: 0, dataAdded: 1234, dataAddedPacked: nil, filesProcessed: 6, bytesProcessed: 9999, durationSeconds: 1)
        let metrics = JobMetrics(job: "backup", start: Date(timeIntervalSince1970: 100), end: Date(timeIntervalSince1970: 160.5), exitCode: 0, backup: statistics)
        let samples = try PrometheusTextParser.parse(metrics.render())
        func value(_ name: String, _ labels: [String: String] = ["job": "backup"]) -> Double? {
            samples.first { $0.name == name && $0.labels == labels }?.value
        }
        XCTAssertEqual(value("cloud_backup_last_run_start_timestamp_seconds"), 100)
        XCTAssertEqual(value("cloud_backup_last_run_end_timestamp_seconds"), 160.5)
        XCTAssertEqual(value("cloud_backup_last_run_duration_seconds"), 60.5)
        XCTAssertEqual(value("cloud_backup_last_run_exit_code"), 0)
        XCTAssertEqual(value("cloud_backup_last_run_success"), 1)
        XCTAssertEqual(value("cloud_backup_last_success_timestamp_seconds"), 160.5)
        XCTAssertEqual(value("cloud_backup_last_snapshot_files", ["job": "backup", "change": "changed"]), 2)
        XCTAssertEqual(value("cloud_backup_last_snapshot_added_bytes"), 1234)
        XCTAssertEqual(value("cloud_backup_last_snapshot_processed_bytes"), 9999)
        XCTAssertEqual(value("cloud_backup_last_snapshot_processed_files"), 6)
        for sample in samples {
            XCTAssertTrue(sample.name.hasPrefix("cloud_backup_"))
        }
    }

    func testAFailureKeepsThePreviousSuccessTimeAndWritesAtomically() throws {
        let directory = NSTemporaryDirectory() + "metrics-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try JobMetrics(job: "forget", start: Date(timeIntervalSince1970: 10), end: Date(timeIntervalSince1970: 20), exitCode: 0).write(to: directory)
        try JobMetrics(job: "forget", start: Date(timeIntervalSince1970: 30), end: Date(timeIntervalSince1970: 40), exitCode: 75).write(to: directory)
        let samples = try PrometheusTextParser.parse(try String(contentsOfFile: directory + "/forget.prom", encoding: .utf8))
        XCTAssertEqual(samples.first { $0.name == "cloud_backup_last_success_timestamp_seconds" }?.value, 20)
        XCTAssertEqual(samples.first { $0.name == "cloud_backup_last_run_success" }?.value, 0)
        XCTAssertEqual(samples.first { $0.name == "cloud_backup_last_run_exit_code" }?.value, 75)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["forget.prom"], "no temporary file left")
    }

    func testTheParserRejectsWhatTheSpecRejects() {
        let bad = ["metric{job=\"a\"} 1", "9metric 1\n", "m{job=a} 1\n", "m{job=\"a\",job=\"b\"} 1\n", "m 1\nm 2\n",
                   "# TYPE m gauge\n# TYPE m gauge\nm 1\n", "m one\n", "m{__x=\"a\"} 1\n", "m 1\nn 1\nm{a=\"b\"} 1\n"]
        for text in bad {
            XCTAssertThrowsError(try PrometheusTextParser.parse(text), text)
        }
        XCTAssertEqual(try PrometheusTextParser.parse("# HELP m x\n# TYPE m gauge\nm{a=\"q\\\"\\n\"} +Inf 123\n").first?.labels["a"], "q\"\n")
    }
}
