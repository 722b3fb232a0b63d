import Foundation
import XCTest
import TestSupport
@testable import CloudBackupCore

/// `drill` and `restore` with the real restic: what a drill proves and when it fails, that its
/// temporary directory never outlives it, and that a restore is refused where it could mix files
/// and is byte-identical (owners included, as root) where it is allowed. Small data: fast.
final class RestoreAndDrillTests: SandboxTestCase {
    let check = "3d7e1f00-5a2b-4c3d-8e9f-0a1b2c3d4e5f"

    /// A repository made once for the class and copied into each sandbox: `restic init` and the
    /// checks after it cost seconds of key derivation, and creating repositories is tested elsewhere.
    nonisolated(unsafe) static var template: String?

    override class func tearDown() {
        if let template { try? FileManager.default.removeItem(atPath: template) }
        template = nil
        super.tearDown()
    }

    override func setUpWithError() throws {
        try super.setUpWithError()
        if Self.template == nil {
            let path = NSTemporaryDirectory() + "cloud-backup-e2e/drill-template-\(UUID().uuidString.prefix(8))"
            let created = try sandbox.restic(["init"], repository: path)
            XCTAssertEqual(created.status, .exited(0), created.standardError)
            Self.template = path
        }
        let copy = try sandbox.runner.run(ProcessSpec(executable: "cp", arguments: ["-a", Self.template!, sandbox.repository], environment: sandbox.environment))
        XCTAssertEqual(copy.status, .exited(0), copy.standardError)
    }

    /// Two directories of small files and a few random ones (not compressible, one blob each).
    func writeTree() throws {
        for directory in ["dir1", "dir2/sub"] {
            try FileManager.default.createDirectory(atPath: "\(sandbox.data)/\(directory)", withIntermediateDirectories: true)
        }
        for index in 0..<3 {
            try "dir1 file \(index) \(UUID().uuidString)\n".write(toFile: "\(sandbox.data)/dir1/f\(index).txt", atomically: true, encoding: .utf8)
            try "dir2 file \(index) \(UUID().uuidString)\n".write(toFile: "\(sandbox.data)/dir2/sub/g\(index).txt", atomically: true, encoding: .utf8)
        }
        for index in 0..<3 {
            let bytes = Data((0..<200_000).map { _ in UInt8.random(in: 0...255) })
            try bytes.write(to: URL(fileURLWithPath: "\(sandbox.data)/dir1/random\(index).bin"))
        }
    }

    var allFiles: [String] {
        (FileManager.default.enumerator(atPath: sandbox.data)?.allObjects as? [String] ?? [])
            .map { "\(sandbox.data)/\($0)" }
            .filter { (try? FileManager.default.attributesOfItem(atPath: $0)[.type] as? FileAttributeType) == .typeRegular }
            .sorted()
    }

    /// The drill's temporary directories (in the state directory: it is outside the backed-up data here).
    func drillDirectories() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "\(sandbox.root)/state")) ?? []).filter { $0.hasPrefix(DrillWorkspace.prefix) }
    }

    func testACleanDrillPassesPingsWhatItProvedThenSkipsFilesChangedOrDeletedSinceTheSnapshot() throws {
        try writeTree()
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        let pings = try PingRecorder(in: sandbox)
        let env = ["DRILL_CHECK_URL": pings.url(check: check), "METRICS_DIR": "\(sandbox.root)/metrics",
                   "DRILL_PATHS": "\(sandbox.data)/dir1:\(sandbox.data)/dir2"]

        let result = try sandbox.run(["drill"], env)
        print("--- drill output ---\n\(result.standardError)--- end ---")
        XCTAssertEqual(result.status, .exited(0), result.standardError)
        let files = allFiles
        XCTAssertEqual(files.count, 9)
        XCTAssertTrue(result.standardError.contains("cloud-backup: drill finished: 9 files restored and byte-identical to the live files, "), result.standardError)
        XCTAssertTrue(result.standardError.contains("it holds every path of DRILL_PATHS (\(sandbox.data)/dir1, \(sandbox.data)/dir2)"), result.standardError)
        for file in files {
            XCTAssertTrue(result.standardError.contains("identical: \(file) ("), file)
        }
        XCTAssertEqual(drillDirectories(), [], "the temporary directory is removed")
        XCTAssertEqual(sandbox.locks(), [])

        let recorded = pings.pings
        XCTAssertEqual(recorded.map(\.path), ["/ping/\(check)/start", "/ping/\(check)/0"])
        let body = recorded[1].body
        print("--- ping body ---\n\(body)\n--- end ---")
        XCTAssertTrue(body.hasPrefix("drill finished: 9 files restored and byte-identical to the live files, 586 KiB read back, snapshot "), body)
        XCTAssertTrue(body.contains("identical: \(sandbox.data)/dir1/random0.bin (195 KiB)"), body)

        let samples = try PrometheusTextParser.parse(try String(contentsOfFile: "\(sandbox.root)/metrics/drill.prom", encoding: .utf8))
        func value(_ name: String, _ extra: [String: String] = [:]) -> Double? {
            samples.first { $0.name == name && $0.labels == ["job": "drill"].merging(extra) { $1 } }?.value
        }
        XCTAssertEqual(value("cloud_backup_last_run_success"), 1)
        XCTAssertEqual(value("cloud_backup_last_drill_files", ["result": "identical"]), 9)
        XCTAssertEqual(value("cloud_backup_last_drill_files", ["result": "failed"]), 0)
        XCTAssertEqual(value("cloud_backup_last_drill_restored_bytes"), Double(files.reduce(0) { $0 + ((try? FileManager.default.attributesOfItem(atPath: $1)[.size] as? Int) ?? 0) }))
        XCTAssertLessThan(try XCTUnwrap(value("cloud_backup_last_drill_snapshot_age_seconds")), 600)

        // A live file changed or deleted after the snapshot is skipped, not failed.
        let changed = "\(sandbox.data)/dir1/f0.txt", deleted = "\(sandbox.data)/dir2/sub/g1.txt"
        try "edited after the snapshot\n".write(toFile: changed, atomically: false, encoding: .utf8)
        try FileManager.default.removeItem(atPath: deleted)
        let later = try sandbox.run(["drill"], env)
        XCTAssertEqual(later.status, .exited(0), later.standardError)
        XCTAssertTrue(later.standardError.contains("skipped (changed since the snapshot): \(changed)"), later.standardError)
        XCTAssertTrue(later.standardError.contains("skipped (deleted since the snapshot): \(deleted)"), later.standardError)
        XCTAssertTrue(later.standardError.contains("drill finished: 9 files restored, 7 byte-identical to the live files (2 skipped: 1 changed and 1 deleted since the snapshot)"), later.standardError)
        XCTAssertEqual(pings.pings.last?.path, "/ping/\(check)/0")
        XCTAssertTrue(pings.pings.last?.body.hasPrefix("drill finished: 9 files restored, 7 byte-identical to the live files (2 skipped: 1 changed and 1 deleted since the snapshot), 586 KiB read back, snapshot ") == true)
        XCTAssertEqual(drillDirectories(), [])
    }

    func testACorruptedPackFailsTheDrillNamingTheAffectedFile() throws {
        try writeTree()
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        // Flip bytes inside the largest pack: it holds the random files' blobs (the trees are in small packs).
        let packs = (FileManager.default.enumerator(atPath: sandbox.repository + "/data")?.allObjects as? [String] ?? [])
            .map { sandbox.repository + "/data/" + $0 }
            .filter { (try? FileManager.default.attributesOfItem(atPath: $0)[.type] as? FileAttributeType) == .typeRegular }
        func size(_ path: String) -> Int { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0 }
        let pack = try XCTUnwrap(packs.max { size($0) < size($1) })
        chmod(pack, 0o644)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: pack))
        for offset in 1000..<1010 { bytes[offset] ^= 0xff }
        try bytes.write(to: URL(fileURLWithPath: pack))
        let pings = try PingRecorder(in: sandbox)

        let result = try sandbox.run(["drill"], ["DRILL_CHECK_URL": pings.url(check: check)])
        print("--- drill output (corrupted pack) ---\n\(result.standardError)--- end ---")
        XCTAssertEqual(result.status, .exited(1), result.standardError)
        let failed = result.standardError.split(separator: "\n").filter { $0.hasPrefix("cloud-backup: FAILED: ") }
            .map { String($0.dropFirst("cloud-backup: FAILED: ".count)) }
        XCTAssertFalse(failed.isEmpty, result.standardError)
        for line in failed {
            XCTAssertTrue(line.hasSuffix(": restic could not restore it: ciphertext verification failed"), line)
            let path = String(line.prefix { $0 != ":" })
            XCTAssertTrue(allFiles.contains(path), path)
            // Independently: restic itself cannot read that file back.
            XCTAssertNotEqual(try sandbox.restic(["dump", "latest", path]).status, .exited(0), path)
        }
        XCTAssertTrue(result.standardError.contains("drill failed: \(failed.count) of 9 files failed: "), result.standardError)
        XCTAssertTrue(result.standardError.contains("run `cloud-backup check --read-data`"), result.standardError)
        let end = try XCTUnwrap(pings.pings.last)
        XCTAssertEqual(end.path, "/ping/\(check)/1")
        XCTAssertTrue(end.body.hasPrefix("drill failed: \(failed.count) of 9 files failed: "), end.body)
        XCTAssertEqual(drillDirectories(), [])
        XCTAssertEqual(sandbox.locks(), [])
    }

    func testASnapshotLackingAConfiguredPathOrHoldingItEmptyFails() throws {
        try writeTree()
        XCTAssertEqual(try sandbox.run(["backup", "\(sandbox.data)/dir1"]).status, .exited(0))
        let lacking = try sandbox.run(["drill"], ["DRILL_PATHS": "\(sandbox.data)/dir1 \(sandbox.data)/dir2"])
        XCTAssertEqual(lacking.status, .exited(1), lacking.standardError)
        XCTAssertTrue(lacking.standardError.contains("drill failed: snapshot "), lacking.standardError)
        XCTAssertTrue(lacking.standardError.contains(" lacks \(sandbox.data)/dir2 (DRILL_PATHS): the backup no longer saves it"), lacking.standardError)
        XCTAssertTrue(lacking.standardError.contains("Otherwise: 6 files restored and byte-identical"), "the files are still drilled: \(lacking.standardError)")

        // An emptied mount point: the path is in the snapshot, with no file in it.
        try FileManager.default.removeItem(atPath: "\(sandbox.data)/dir2/sub")
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        let empty = try sandbox.run(["drill"], ["DRILL_PATHS": "\(sandbox.data)/dir1:\(sandbox.data)/dir2"])
        XCTAssertEqual(empty.status, .exited(1), empty.standardError)
        XCTAssertTrue(empty.standardError.contains("holds \(sandbox.data)/dir2 (DRILL_PATHS) but no file in it"), empty.standardError)
        XCTAssertEqual(drillDirectories(), [])
    }

    func testSigtermMidDrillStopsItAndRemovesTheTemporaryDirectory() throws {
        try writeTree()
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))
        let pings = try PingRecorder(in: sandbox)
        let (job, log) = try sandbox.launch(["drill"], ["DRILL_CHECK_URL": pings.url(check: check)], log: "drill")
        try waitFor("the drill's temporary directory", seconds: 30) { !self.drillDirectories().isEmpty }
        job.send(SIGTERM)
        let result = waitForExit(job, seconds: 20)
        let text = sandbox.readLog(log)
        XCTAssertEqual(result?.status, .exited(130), text)
        XCTAssertTrue(text.contains("drill interrupted: stopped on request; the temporary directory was removed"), text)
        XCTAssertEqual(drillDirectories(), [], text)
        XCTAssertEqual(sandbox.childPIDs(of: job.pid, named: "restic"), [])
        XCTAssertEqual(sandbox.locks(), [], "restic released its lock")
        XCTAssertEqual(pings.pings.last?.path, "/ping/\(check)/130")
    }

    func testRestoreRefusesANonEmptyTargetAndIsByteIdenticalWithOwnersKeptAsRoot() throws {
        try XCTSkipUnless(geteuid() == 0, "keeping owners needs root")
        try writeTree()
        // Files of other users, with their own modes, and a symbolic link.
        chown("\(sandbox.data)/dir1/f1.txt", 4321, 4322)
        chmod("\(sandbox.data)/dir1/f1.txt", 0o640)
        chown("\(sandbox.data)/dir2/sub", 4323, 4323)
        chmod("\(sandbox.data)/dir2/sub", 0o750)
        symlink("f0.txt", "\(sandbox.data)/dir1/link")
        XCTAssertEqual(try sandbox.run(["backup", sandbox.data]).status, .exited(0))

        let busy = "\(sandbox.root)/busy-target"
        try FileManager.default.createDirectory(atPath: busy, withIntermediateDirectories: true)
        try "mine\n".write(toFile: "\(busy)/keep.txt", atomically: true, encoding: .utf8)
        let refused = try sandbox.run(["restore", "--target", busy])
        XCTAssertEqual(refused.status, .exited(73), refused.standardError)
        XCTAssertTrue(refused.standardError.contains("restore refused: \(busy) is not empty (1 entry)"), refused.standardError)
        XCTAssertTrue(refused.standardError.contains("add --overwrite"), refused.standardError)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: busy), ["keep.txt"], "nothing was written")

        let target = "\(sandbox.root)/restore"
        let restored = try sandbox.run(["restore", "--target", target])
        print("--- restore output ---\n\(restored.standardOutput)\(restored.standardError)--- end ---")
        XCTAssertEqual(restored.status, .exited(0), restored.standardError)
        XCTAssertTrue(restored.standardError.contains("restore finished: 9 files (586 KiB) restored from snapshot "), restored.standardError)
        XCTAssertTrue(restored.standardError.contains("owners, groups and modes kept (run as root)"), restored.standardError)
        XCTAssertTrue(restored.standardError.contains("compare with the originals: diff -r \(target)\(sandbox.data) \(sandbox.data)"), restored.standardError)
        let diff = try sandbox.runner.run(ProcessSpec(executable: "diff", arguments: ["-r", "--no-dereference", target + sandbox.data, sandbox.data],
                                                      environment: sandbox.environment))
        XCTAssertEqual(diff.status, .exited(0), diff.standardOutput + diff.standardError)
        for path in allFiles + ["\(sandbox.data)/dir2/sub", "\(sandbox.data)/dir1"] {
            var original = stat(), copy = stat()
            XCTAssertEqual(lstat(path, &original), 0)
            XCTAssertEqual(lstat(target + path, &copy), 0, path)
            XCTAssertEqual(copy.st_uid, original.st_uid, path)
            XCTAssertEqual(copy.st_gid, original.st_gid, path)
            XCTAssertEqual(copy.st_mode, original.st_mode, path)
        }
        var info = stat()
        XCTAssertEqual(lstat("\(target)\(sandbox.data)/dir1/f1.txt", &info), 0)
        XCTAssertEqual([info.st_uid, info.st_gid], [4321, 4322])

        // --overwrite restores into the non-empty target and deletes nothing.
        let one = "\(sandbox.data)/dir1/random1.bin"
        let overwritten = try sandbox.run(["restore", "latest", "--target", busy, "--include", one, "--overwrite"])
        XCTAssertEqual(overwritten.status, .exited(0), overwritten.standardError)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: busy + one)), try Data(contentsOf: URL(fileURLWithPath: one)))
        XCTAssertEqual(try String(contentsOfFile: "\(busy)/keep.txt", encoding: .utf8), "mine\n")
        XCTAssertTrue(overwritten.standardError.contains("compare with the originals: diff -r \(busy)\(one) \(one)"), overwritten.standardError)

        // As another user: the bytes and modes come back, the owners cannot, and it says so.
        let opened = try sandbox.runner.run(ProcessSpec(executable: "chmod", arguments: ["-R", "a+rwX", sandbox.root], environment: sandbox.environment))
        XCTAssertEqual(opened.status, .exited(0))
        let asUser = "\(sandbox.root)/restore-as-user"
        let user = try sandbox.run(["restore", "--target", asUser], wrapper: ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        XCTAssertEqual(user.status, .exited(0), user.standardError)
        XCTAssertTrue(user.standardError.contains("modes kept, but owners were not: every restored file belongs to nobody"), user.standardError)
        XCTAssertEqual(lstat("\(asUser)\(sandbox.data)/dir1/f1.txt", &info), 0)
        XCTAssertEqual([info.st_uid, info.st_mode & 0o777], [65534, 0o640])
    }
}
