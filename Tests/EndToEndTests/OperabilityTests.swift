import Foundation
import XCTest
@testable import CloudBackupCore
import TestSupport

/// Progress lines in logs, Prometheus metrics and the monitored `check`, with real restic.
final class OperabilityTests: SandboxTestCase {
    func metrics(_ job: String) throws -> [PrometheusTextParser.Sample] {
        try PrometheusTextParser.parse(try String(contentsOfFile: "\(sandbox.root)/metrics/\(job).prom", encoding: .utf8))
    }

    func value(_ samples: [PrometheusTextParser.Sample], _ name: String, _ extra: [String: String] = [:], job: String = "backup") -> Double? {
        samples.first { $0.name == name && $0.labels == ["job": job].merging(extra) { $1 } }?.value
    }

    func testProgressLinesInLogsAndMetricsMatchTheSnapshot() throws {
        try sandbox.writeData(files: 30, megabytes: 40)
        let env = ["PROGRESS_INTERVAL_SECONDS": "1", "METRICS_DIR": "\(sandbox.root)/metrics"]
        // --limit-upload (KiB/s) makes the backup last a few seconds, so progress lines are due.
        let result = try sandbox.run(["backup", "--limit-upload", "12000", sandbox.data], env)
        XCTAssertEqual(result.status, .exited(0), result.standardError)
        let progress = result.standardOutput.split(separator: "\n").filter { $0.hasPrefix("progress: ") }
        XCTAssertGreaterThanOrEqual(progress.count, 1, result.standardOutput)
        XCTAssertTrue(progress.allSatisfy { $0.contains("% done, ") && $0.contains(" of 50 files") && $0.contains("elapsed ") }, "\(progress)")
        XCTAssertFalse(result.standardOutput.contains("\"message_type\""), "no raw JSON in the log")
        XCTAssertTrue(result.standardOutput.contains("Files:          50 new,     0 changed,     0 unmodified"), result.standardOutput)
        XCTAssertTrue(result.standardOutput.contains("Added to the repository: "))

        let samples = try metrics("backup")
        // Checked against what restic itself says of the snapshot.
        let snapshots = try sandbox.restic(["snapshots", "--json", "--no-lock"])
        let snapshot = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(snapshots.standardOutput.utf8)) as? [[String: Any]])?.first)
        let listing = try sandbox.restic(["ls", "--json", "--no-lock", snapshot["short_id"] as! String])
        let files = listing.standardOutput.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            .filter { $0["type"] as? String == "file" }
        let totalBytes: Int64 = files.compactMap { ($0["size"] as? NSNumber)?.int64Value }.reduce(0, +)
        XCTAssertEqual(value(samples, "cloud_backup_last_snapshot_processed_files"), Double(files.count))
        XCTAssertEqual(value(samples, "cloud_backup_last_snapshot_processed_bytes"), Double(totalBytes))
        XCTAssertEqual(value(samples, "cloud_backup_last_snapshot_files", ["change": "new"]), Double(files.count))
        XCTAssertGreaterThan(value(samples, "cloud_backup_last_snapshot_added_bytes") ?? 0, 40_000_000)
        XCTAssertEqual(value(samples, "cloud_backup_last_run_success"), 1)
        XCTAssertEqual(value(samples, "cloud_backup_last_run_exit_code"), 0)
        let start = try XCTUnwrap(value(samples, "cloud_backup_last_run_start_timestamp_seconds"))
        let end = try XCTUnwrap(value(samples, "cloud_backup_last_run_end_timestamp_seconds"))
        let snapshotTime = ISO8601DateFormatter.withFractions.date(from: snapshot["time"] as? String ?? "")?.timeIntervalSince1970 ?? 0
        XCTAssertTrue(start <= snapshotTime && snapshotTime <= end, "snapshot time \(snapshotTime) outside \(start)…\(end)")
        let duration: Double = value(samples, "cloud_backup_last_run_duration_seconds") ?? 0
        XCTAssertEqual(duration, end - start, accuracy: 0.01)

        // A failed forget writes its own file; backup.prom stays.
        let forget = try sandbox.run(["forget", "--keep-last", "1"], env.merging(["RESTIC_PASSWORD": "wrong-password"]) { $1 })
        XCTAssertEqual(forget.status, .exited(1))
        let forgetSamples = try metrics("forget")
        XCTAssertEqual(value(forgetSamples, "cloud_backup_last_run_success", job: "forget"), 0)
        XCTAssertEqual(value(forgetSamples, "cloud_backup_last_run_exit_code", job: "forget"), 1)
        XCTAssertNil(value(forgetSamples, "cloud_backup_last_success_timestamp_seconds", job: "forget"))
        XCTAssertEqual(try metrics("backup").count, samples.count)
    }

    func testMetricsAreWrittenBeforeASlowFinalPing() throws {
        try sandbox.writeData(files: 3)
        let slow = try PingRecorder(in: sandbox, arguments: ["--delay", "6"])
        let metrics = "\(sandbox.root)/metrics"
        let (job, log) = try sandbox.launch(["backup", sandbox.data], ["BACKUP_CHECK_URL": slow.url(), "PING_TIMEOUT_SECONDS": "2",
                                                                       "METRICS_DIR": metrics], log: "backup")
        // restic is done and the job is busy with its final ping (`docker stop` would come now).
        try waitFor("the backup's summary", seconds: 60) { self.sandbox.readLog(log).contains("backup finished: snapshot") }
        Thread.sleep(forTimeInterval: 1)
        XCTAssertFalse(job.hasExited, "the final ping is still under way")
        job.send(SIGKILL)
        _ = job.wait()
        let text = (try? String(contentsOfFile: "\(metrics)/backup.prom", encoding: .utf8)) ?? ""
        XCTAssertTrue(text.contains("cloud_backup_last_run_success{job=\"backup\"} 1"), "metrics written before the ping:\n\(text)")
    }

    func testTheUsersOwnJSONIsPassedThroughUntouched() throws {
        try sandbox.writeData(files: 3)
        let result = try sandbox.run(["backup", "--json", sandbox.data], ["METRICS_DIR": "\(sandbox.root)/metrics"])
        XCTAssertEqual(result.status, .exited(0), result.standardError)
        let lines = result.standardOutput.split(separator: "\n")
        XCTAssertFalse(lines.isEmpty)
        for line in lines {
            XCTAssertNotNil(try? JSONSerialization.jsonObject(with: Data(line.utf8)), "not JSON: \(line)")
        }
        XCTAssertTrue(lines.last!.contains("\"message_type\":\"summary\""))
        XCTAssertEqual(value(try metrics("backup"), "cloud_backup_last_snapshot_processed_files"), 3)
    }

    func testCheckPassesThenFindsACorruptedPack() throws {
        try sandbox.writeData(files: 3, megabytes: 4)
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        let pings = try PingRecorder(in: sandbox)
        let env = ["CHECK_CHECK_URL": pings.url(), "METRICS_DIR": "\(sandbox.root)/metrics"]

        let healthy = try sandbox.run(["check", "--read-data"], env)
        XCTAssertEqual(healthy.status, .exited(0), healthy.standardError)
        XCTAssertTrue(healthy.standardError.contains("check finished: no errors were found"), healthy.standardError)
        XCTAssertEqual(pings.pings.map(\.path).last, "/ping/2b8a4c0e-1d2f-4e5a-9b6c-7d8e9f0a1b2c/0")
        XCTAssertEqual(value(try metrics("check"), "cloud_backup_last_run_success", job: "check"), 1)

        // Flip bytes in the middle of the largest pack file.
        let packs = FileManager.default.enumerator(atPath: sandbox.repository + "/data")!.allObjects.compactMap { $0 as? String }
            .map { sandbox.repository + "/data/" + $0 }
            .filter { (try? FileManager.default.attributesOfItem(atPath: $0)[.type] as? FileAttributeType) == .typeRegular }
        let pack = try XCTUnwrap(packs.max { (try? Data(contentsOf: URL(fileURLWithPath: $0)).count) ?? 0 < (try? Data(contentsOf: URL(fileURLWithPath: $1)).count) ?? 0 })
        chmod(pack, 0o644)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: pack))
        for offset in stride(from: bytes.count / 2, to: min(bytes.count / 2 + 64, bytes.count), by: 1) { bytes[offset] ^= 0xff }
        try bytes.write(to: URL(fileURLWithPath: pack))

        let broken = try sandbox.run(["check", "--read-data"], env)
        XCTAssertEqual(broken.status, .exited(1), broken.standardError)
        XCTAssertTrue(broken.standardError.contains("check failed"), broken.standardError)
        let ping = pings.pings.last!
        XCTAssertEqual(ping.path, "/ping/2b8a4c0e-1d2f-4e5a-9b6c-7d8e9f0a1b2c/1")
        XCTAssertTrue(ping.body.hasPrefix("check failed: "), ping.body)
        XCTAssertTrue(ping.body.contains("repository contains errors"), ping.body)
        XCTAssertEqual(value(try metrics("check"), "cloud_backup_last_run_success", job: "check"), 0)
    }

    func testCheckNeverInitialises() throws {
        let result = try sandbox.run(["check"])
        XCTAssertEqual(result.status, .exited(1))
        XCTAssertTrue(result.standardError.contains("there is no restic repository at"), result.standardError)
        XCTAssertFalse(FileManager.default.fileExists(atPath: sandbox.repository + "/config"))
    }
}

extension ISO8601DateFormatter {
    nonisolated(unsafe) static let withFractions: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }()
}
