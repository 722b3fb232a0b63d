import XCTest
@testable import CloudBackupCore
import TestSupport

final class SHA256Tests: XCTestCase {
    func hex(_ text: String) -> String { SHA256.hash(Data(text.utf8)) }

    func testNISTVectors() {
        XCTAssertEqual(hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(SHA256.hash(Data(repeating: UInt8(ascii: "a"), count: 1_000_000)),
                       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    func testPiecewiseUpdatesEqualOneShotAcrossBlockBoundaries() {
        let data = Data((0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
        let whole = SHA256.hash(data)
        for split in [1, 55, 56, 63, 64, 65, 127, 500, 999] {
            var hasher = SHA256()
            hasher.update(data.prefix(split))
            hasher.update(data.dropFirst(split))
            XCTAssertEqual(SHA256.hex(hasher.finalize()), whole, "split at \(split)")
        }
    }

    func testFilesAreHashedInChunksAndAStopIsHonoured() throws {
        let path = NSTemporaryDirectory() + "sha-\(UUID().uuidString)"
        defer { unlink(path) }
        let data = Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0) })
        try data.write(to: URL(fileURLWithPath: path))
        XCTAssertEqual(SHA256.hashFile(atPath: path), .success(SHA256.hash(data)))
        XCTAssertEqual(SHA256.hashFile(atPath: path, stop: { true }), .failure(.stopped))
        if case .failure(.cannotRead(let reason)) = SHA256.hashFile(atPath: path + "-missing") {
            XCTAssertTrue(reason.contains("No such file"), reason)
        } else {
            XCTFail("a missing file cannot be read")
        }
    }
}

final class SnapshotContentsTests: XCTestCase {
    // Lines as restic 0.14 prints them (`restic ls --json`), and 0.17's node shape.
    let snapshotLine: Substring = #"{"time":"2026-12-03T18:13:33.86713758Z","tree":"ede3","paths":["/tmp/h12x/data/a"],"hostname":"h1","username":"root","id":"e9b1ccb7cd","short_id":"e9b1ccb7","struct_type":"snapshot"}"#
    let fileLine: Substring = #"{"name":"f2","type":"file","path":"/data/a/b/f2","uid":0,"gid":0,"size":6,"mode":420,"permissions":"-rw-r--r--","mtime":"2026-12-03T18:13:33.830706066Z","atime":"2026-12-03T18:13:33.830706066Z","ctime":"2026-12-03T18:13:33.830706066Z","struct_type":"node"}"#
    let directoryLine: Substring = #"{"name":"b","type":"dir","path":"/data/a/b","uid":0,"gid":0,"mode":2147484141,"permissions":"drwxr-xr-x","mtime":"2026-12-03T18:13:33.830706066Z","struct_type":"node"}"#
    let linkLine: Substring = #"{"name":"link","type":"symlink","path":"/data/a/link","uid":0,"gid":0,"mode":134218239,"mtime":"2026-12-03T18:13:33.838706066Z","struct_type":"node"}"#
    let newerFileLine: Substring = #"{"name":"x","type":"file","path":"/d/x","size":12,"mtime":"2026-12-03T19:13:33.5+01:00","message_type":"node","struct_type":"node"}"#

    func testNodesAreReadFromResticsLsJSON() {
        XCTAssertNil(SnapshotNode.parse(jsonLine: snapshotLine))
        XCTAssertEqual(SnapshotNode.parse(jsonLine: fileLine),
                       SnapshotNode(path: "/data/a/b/f2", kind: .file, size: 6, modified: FileTime(seconds: 1_796_321_613, nanoseconds: 830_706_066)))
        XCTAssertEqual(SnapshotNode.parse(jsonLine: directoryLine)?.kind, .directory)
        XCTAssertEqual(SnapshotNode.parse(jsonLine: linkLine)?.kind, .other)
        XCTAssertEqual(SnapshotNode.parse(jsonLine: newerFileLine),
                       SnapshotNode(path: "/d/x", kind: .file, size: 12, modified: FileTime(seconds: 1_796_321_613, nanoseconds: 500_000_000)))
        XCTAssertNil(SnapshotNode.parse(jsonLine: "restoring <Snapshot …>"))
        XCTAssertNil(SnapshotNode.parse(jsonLine: #"{"struct_type":"node""#))
    }

    func testTimesAreExactToTheNanosecond() {
        XCTAssertEqual(FileTime.parse("2026-12-03T18:13:33Z"), FileTime(seconds: 1_796_321_613, nanoseconds: 0))
        XCTAssertEqual(FileTime.parse("2026-12-03T18:13:33.8307Z"), FileTime(seconds: 1_796_321_613, nanoseconds: 830_700_000))
        XCTAssertEqual(FileTime.parse("2026-12-03T20:13:33.000000001+02:00"), FileTime(seconds: 1_796_321_613, nanoseconds: 1))
        XCTAssertEqual(FileTime.parse("2026-12-03T17:13:33.25-01:00"), FileTime(seconds: 1_796_321_613, nanoseconds: 250_000_000))
        XCTAssertEqual(FileTime.parse("1969-07-20T20:17:40Z"), FileTime(seconds: -14_182_940, nanoseconds: 0))
        for bad in ["", "2026-12-03", "2026-12-03T18:13:33", "2026-13-03T18:13:33Z", "2026-12-03T18:13:33.Z", "2026-12-03T18:13:33+0100", "x026-12-03T18:13:33Z"] {
            XCTAssertNil(FileTime.parse(bad), bad)
        }
    }

    func testTheNewestSnapshotOfThisHost() throws {
        let json = """
        [{"time":"2026-12-01T02:00:00Z","paths":["/backup"],"hostname":"vm1","id":"aaaa1111","short_id":"aaaa1111"},
         {"time":"2026-12-03T02:00:00.5Z","paths":["/backup/db"],"hostname":"vm1","id":"bbbb2222bbbb","short_id":"bbbb2222"},
         {"time":"2026-12-04T02:00:00Z","paths":["/srv"],"hostname":"vm2","id":"cccc3333","short_id":"cccc3333"}]
        """
        let newest = try SnapshotSummary.newest(inSnapshotsJSON: json, host: "vm1").get()
        XCTAssertEqual(newest?.shortID, "bbbb2222")
        XCTAssertEqual(newest?.paths, ["/backup/db"])
        XCTAssertNil(try SnapshotSummary.newest(inSnapshotsJSON: "[]", host: "vm1").get())
        XCTAssertNil(try SnapshotSummary.newest(inSnapshotsJSON: json, host: "vm9").get())
        XCTAssertThrowsError(try SnapshotSummary.newest(inSnapshotsJSON: "Fatal: x", host: "vm1").get())
    }

    func testResticArgv() {
        XCTAssertEqual(ResticCommand.latestSnapshots(host: "vm1"), ["snapshots", "--json", "--no-lock", "--latest", "1", "--host", "vm1"])
        XCTAssertEqual(ResticCommand.listSnapshot("abcd1234"), ["ls", "--json", "abcd1234"])
        XCTAssertEqual(ResticCommand.restore(snapshot: "abcd1234", target: "/t", includes: ["/a/b", "/c"]),
                       ["restore", "abcd1234", "--target", "/t", "--verify", "--include", "/a/b", "--include", "/c"])
        XCTAssertEqual(ResticCommand.restore(snapshot: "abcd1234", target: "/t", includes: []), ["restore", "abcd1234", "--target", "/t", "--verify"])
        // The drill names files exactly: restic's pattern characters are escaped.
        XCTAssertEqual(ResticCommand.includePattern(forPath: "/d/we[ir]d*/q?.txt"), #"/d/we\[ir\]d\*/q\?.txt"#)
        XCTAssertEqual(ResticCommand.includePattern(forPath: #"/d/back\slash"#), #"/d/back\\slash"#)
        XCTAssertEqual(ResticCommand.includePattern(forPath: "/plain/path name"), "/plain/path name")
        XCTAssertEqual(ResticCommand.cacheArguments(euid: 0, stateDirectoryOwner: 1000), ["--no-cache"], "root in the user's state: no root files in the user's cache")
        XCTAssertEqual(ResticCommand.cacheArguments(euid: 0, stateDirectoryOwner: 0), [])
        XCTAssertEqual(ResticCommand.cacheArguments(euid: 1000, stateDirectoryOwner: 1000), [])
        XCTAssertEqual(ResticCommand.cacheArguments(euid: 0, stateDirectoryOwner: nil), [], "a state directory that does not exist yet is root's own")
        // The drill's restic commands take locks like any job's and are registered for that.
        XCTAssertTrue(RegisteringRunner.makesLocks(ResticCommand.listSnapshot("x")))
        XCTAssertTrue(RegisteringRunner.makesLocks(ResticCommand.restore(snapshot: "x", target: "/t", includes: [])))
        XCTAssertFalse(RegisteringRunner.makesLocks(ResticCommand.latestSnapshots(host: "h")))
    }

    func testRestoreErrorsAreAttributedToTheirFiles() {
        let stderr = """
        ignoring error for /d/a: b/r1: ciphertext verification failed
        ignoring error for /d/a: b/r1: UtimesNano: no such file or directory
        ignoring error for /tmp/t/restore/d/r2: Invalid file size for /tmp/t/restore/d/r2: expected 4, got 3
        ignoring error for /elsewhere: something
        Fatal: There were 4 errors
        """
        let errors = RestoreErrors.parse(stderr, paths: ["/d/a", "/d/a: b/r1", "/d/r2", "/tmp/t/restore/d/r2"])
        XCTAssertEqual(errors.byFile.map(\.path), ["/d/a: b/r1", "/d/a: b/r1", "/tmp/t/restore/d/r2"])
        XCTAssertEqual(errors.byFile.first?.reason, "ciphertext verification failed")
        XCTAssertEqual(errors.other, ["/elsewhere: something"])
        XCTAssertEqual(RestoreErrors.parse("restoring <Snapshot …> to /t\n", paths: ["/x"]), RestoreErrors(byFile: [], other: []))
    }
}

final class DrillSelectionTests: XCTestCase {
    let day = 86_400.0
    let start = Date(timeIntervalSince1970: 1_796_256_000)  // 2026-12-03, a Thursday

    func files(_ count: Int, under directory: String, modifiedFrom base: Int64 = 1_700_000_000) -> [DrillCandidate] {
        (0..<count).map { DrillCandidate(path: "\(directory)/f\($0)", size: Int64($0), modified: FileTime(seconds: base + Int64($0), nanoseconds: 0)) }
    }

    func testFewerFilesThanAskedAreAllChosen() {
        let all = files(5, under: "/d")
        XCTAssertEqual(DrillSelection.choose(all, roots: ["/d"], date: start, count: 20), all.sorted { $0.path < $1.path })
        XCTAssertEqual(DrillSelection.choose([], roots: ["/d"], date: start, count: 20), [])
        XCTAssertEqual(DrillSelection.choose(all, roots: ["/d"], date: start, count: 0), [])
    }

    func testTheSameDateChoosesTheSameFilesAndAnotherDateOthers() {
        let all = files(500, under: "/backup/dir1")
        let first = DrillSelection.choose(all, roots: ["/backup"], date: start, count: 20)
        XCTAssertEqual(first.count, 20)
        XCTAssertEqual(Set(first.map(\.path)).count, 20)
        XCTAssertEqual(first, DrillSelection.choose(all.reversed(), roots: ["/backup"], date: start.addingTimeInterval(3600), count: 20),
                       "seeded by the day, not the hour or the listing's order")
        let next = DrillSelection.choose(all, roots: ["/backup"], date: start.addingTimeInterval(7 * day), count: 20)
        XCTAssertNotEqual(Set(first.map(\.path)), Set(next.map(\.path)))
        XCTAssertEqual(first.map(\.path), first.map(\.path).sorted(), "in path order")
    }

    func testAQuarterAreTheMostRecentlyChangedFiles() {
        var all = files(400, under: "/backup/dir1", modifiedFrom: 1_600_000_000)
        let recent = (0..<5).map { DrillCandidate(path: "/backup/dir1/new\($0)", size: 1, modified: FileTime(seconds: 1_790_000_000 + Int64($0), nanoseconds: 0)) }
        all += recent
        for offset in [0, 1, 7, 30] {
            let chosen = Set(DrillSelection.choose(all, roots: ["/backup"], date: start.addingTimeInterval(Double(offset) * day), count: 20).map(\.path))
            XCTAssertTrue(Set(recent.map(\.path)).isSubset(of: chosen), "day +\(offset)")
        }
    }

    func testChoicesAreSpreadOverTheBackedUpPathsAndTheirTopLevelDirectories() {
        let all = files(1000, under: "/backup/big") + files(3, under: "/backup/small") + files(10, under: "/srv/data/sub")
            + [DrillCandidate(path: "/backup/top.txt", size: 1, modified: FileTime(seconds: 1, nanoseconds: 0))]
        let chosen = DrillSelection.choose(all, roots: ["/backup", "/srv/data"], date: start, count: 12).map(\.path)
        XCTAssertEqual(chosen.count, 12)
        XCTAssertTrue(chosen.contains("/backup/top.txt"), "a file directly in a backed-up path is a group of its own")
        XCTAssertGreaterThanOrEqual(chosen.filter { $0.hasPrefix("/backup/small/") }.count, 2)
        XCTAssertGreaterThanOrEqual(chosen.filter { $0.hasPrefix("/srv/data/") }.count, 2)
        XCTAssertLessThanOrEqual(chosen.filter { $0.hasPrefix("/backup/big/") }.count, 8, "the large directory does not crowd out the others")
    }

    func testOverWeeksEveryFileGetsItsTurnWhateverTheSchedule() {
        let all = files(300, under: "/backup/dir1")
        for step in [1.0, 7.0, 3.0] {
            var seen = Set<String>()
            var runs = 0
            while seen.count < all.count && runs < 200 {
                let date = start.addingTimeInterval(Double(runs) * step * day)
                seen.formUnion(DrillSelection.choose(all, roots: ["/backup"], date: date, count: 20).map(\.path))
                runs += 1
            }
            // 15 rotating slots a run over 300 files: 20 runs at the very least; evenly spread windows
            // need only a few more.
            XCTAssertEqual(seen.count, all.count, "every \(step) days")
            XCTAssertLessThanOrEqual(runs, 45, "every \(step) days: all covered after \(runs) runs")
        }
    }

    func testGroupKeys() {
        XCTAssertEqual(DrillSelection.groupKey(for: "/backup/dir1/a/b", roots: ["/backup"]), "/backup/dir1")
        XCTAssertEqual(DrillSelection.groupKey(for: "/backup/file", roots: ["/backup"]), "/backup")
        XCTAssertEqual(DrillSelection.groupKey(for: "/backup/dir1/a", roots: ["/backup", "/backup/dir1"]), "/backup/dir1")
        XCTAssertEqual(DrillSelection.groupKey(for: "/etc/x/y", roots: ["/"]), "/etc")
        XCTAssertEqual(DrillSelection.groupKey(for: "/data/a/b/c", roots: ["/srv"]), "/data/a", "a path under no root (a relative backup)")
        XCTAssertEqual(DrillSelection.fnv1a("a"), 0xaf63_dc4c_8601_ec8c, "FNV-1a's published value: stable everywhere")
    }
}

final class DrillVerdictTests: XCTestCase {
    let saved = DrillCandidate(path: "/d/f", size: 10, modified: FileTime(seconds: 100, nanoseconds: 5))

    func testALiveFileChangedOrDeletedSinceTheSnapshotIsSkipped() {
        XCTAssertNil(DrillComparison.skipReason(saved, live: .regular(size: 10, modified: FileTime(seconds: 100, nanoseconds: 5))))
        XCTAssertEqual(DrillComparison.skipReason(saved, live: .regular(size: 11, modified: FileTime(seconds: 100, nanoseconds: 5))), .changed)
        XCTAssertEqual(DrillComparison.skipReason(saved, live: .regular(size: 10, modified: FileTime(seconds: 100, nanoseconds: 6))), .changed,
                       "to the nanosecond")
        XCTAssertEqual(DrillComparison.skipReason(saved, live: .notRegular), .changed)
        XCTAssertEqual(DrillComparison.skipReason(saved, live: .missing), .deleted)
        XCTAssertEqual(DrillComparison.skipReason(saved, live: .unreadable("Permission denied")), .unreadable)
    }

    func testDifferentBytesUnderTheSameSizeAndTimeFailButAFileWrittenDuringTheReadIsSkipped() {
        let same = LiveFile.regular(size: 10, modified: FileTime(seconds: 100, nanoseconds: 5))
        XCTAssertEqual(DrillComparison.verdict(saved, restoredHash: "ab", liveHash: "ab", liveAfter: same), .identical)
        guard case .failed(let reason) = DrillComparison.verdict(saved, restoredHash: "aa11", liveHash: "bb22", liveAfter: same) else {
            return XCTFail("a mismatch is a failure")
        }
        XCTAssertTrue(reason.contains("restored sha256 aa11…, live bb22…"), reason)
        XCTAssertEqual(DrillComparison.verdict(saved, restoredHash: "aa", liveHash: "bb", liveAfter: .regular(size: 10, modified: FileTime(seconds: 101, nanoseconds: 0))),
                       .skipped(.changed))
    }

    func testDrillPathsAndCoverage() {
        XCTAssertEqual(PathCoverage.parse("/backup/dir1:/backup/dir2 /srv/ \n/backup/dir1").paths, ["/backup/dir1", "/backup/dir2", "/srv"])
        XCTAssertEqual(PathCoverage.parse("data:/ok").relative, ["data"])
        XCTAssertEqual(PathCoverage.parse("").paths, [])

        var coverage = PathCoverage(expected: ["/backup/dir1", "/backup/dir2", "/backup/dir3", "/etc/hosts"])
        let time = FileTime(seconds: 0, nanoseconds: 0)
        for node in [SnapshotNode(path: "/backup", kind: .directory, size: 0, modified: time),
                     SnapshotNode(path: "/backup/dir1", kind: .directory, size: 0, modified: time),
                     SnapshotNode(path: "/backup/dir1/a", kind: .directory, size: 0, modified: time),
                     SnapshotNode(path: "/backup/dir1/a/f", kind: .file, size: 1, modified: time),
                     SnapshotNode(path: "/backup/dir2", kind: .directory, size: 0, modified: time),
                     SnapshotNode(path: "/backup/dir20/f", kind: .file, size: 1, modified: time),
                     SnapshotNode(path: "/etc/hosts", kind: .file, size: 1, modified: time)] {
            coverage.observe(node)
        }
        let problems = coverage.problems(snapshot: "1a2b3c4d")
        XCTAssertEqual(problems.count, 2, "\(problems)")
        XCTAssertTrue(problems[0].hasPrefix("snapshot 1a2b3c4d holds /backup/dir2 (DRILL_PATHS) but no file in it"), problems[0])
        XCTAssertTrue(problems[0].contains("unmounted volume"), problems[0])
        XCTAssertTrue(problems[1].hasPrefix("snapshot 1a2b3c4d lacks /backup/dir3 (DRILL_PATHS)"), problems[1])
        XCTAssertEqual(PathCoverage(expected: []).problems(snapshot: "x"), [])
    }
}

final class DrillReportTests: XCTestCase {
    let snapshot = SnapshotSummary(id: "1a2b3c4d5e6f", shortID: "1a2b3c4d", time: Date(timeIntervalSince1970: 1_000_000), hostname: "vm1", paths: ["/backup"])
    var now: Date { Date(timeIntervalSince1970: 1_000_000 + 5 * 3600 + 60) }

    func results(identical: Int, changed: Int = 0, deleted: Int = 0, failed: [String: String] = [:], size: Int64 = 20 * 1024 * 1024)
        -> [(candidate: DrillCandidate, result: DrillFileResult)] {
        var list: [(candidate: DrillCandidate, result: DrillFileResult)] = []
        func candidate(_ name: String) -> DrillCandidate { DrillCandidate(path: "/backup/\(name)", size: size, modified: FileTime(seconds: 0, nanoseconds: 0)) }
        for index in 0..<identical { list.append((candidate("same\(index)"), .identical)) }
        for index in 0..<changed { list.append((candidate("changed\(index)"), .skipped(.changed))) }
        for index in 0..<deleted { list.append((candidate("gone\(index)"), .skipped(.deleted))) }
        for (name, reason) in failed.sorted(by: { $0.key < $1.key }) { list.append((candidate(name), .failed(reason))) }
        return list
    }

    func testWhatAPassingDrillProved() {
        let report = DrillReport(snapshot: snapshot, now: now, results: results(identical: 17, changed: 3), restoredBytes: 412 * 1024 * 1024,
                                 snapshotProblems: [], expectedPaths: ["/backup/dir1", "/backup/dir2"])
        XCTAssertTrue(report.passed)
        XCTAssertEqual(report.summary, "drill finished: 20 files restored, 17 byte-identical to the live files (3 skipped: changed since the snapshot), 412 MiB read back, snapshot 1a2b3c4d of 5 h ago; it holds every path of DRILL_PATHS (/backup/dir1, /backup/dir2)")
        let clean = DrillReport(snapshot: snapshot, now: now, results: results(identical: 20), restoredBytes: 412 * 1024 * 1024,
                                snapshotProblems: [], expectedPaths: [])
        XCTAssertEqual(clean.summary, "drill finished: 20 files restored and byte-identical to the live files, 412 MiB read back, snapshot 1a2b3c4d of 5 h ago; no expected paths configured (DRILL_PATHS), so only checked that the snapshot is not empty")
        let mixed = DrillReport(snapshot: snapshot, now: now, results: results(identical: 1, changed: 2, deleted: 1), restoredBytes: 1500,
                                snapshotProblems: [], expectedPaths: [])
        XCTAssertTrue(mixed.summary.contains("4 files restored, 1 byte-identical to the live files (3 skipped: 2 changed and 1 deleted since the snapshot), 1.46 KiB read back"), mixed.summary)
        XCTAssertEqual(mixed.fileLines, ["identical: /backup/same0 (20.0 MiB)", "skipped (changed since the snapshot): /backup/changed0",
                                         "skipped (changed since the snapshot): /backup/changed1", "skipped (deleted since the snapshot): /backup/gone0"])
    }

    func testAFailingDrillNamesTheFilesAndWhatToDo() {
        let report = DrillReport(snapshot: snapshot, now: now,
                                 results: results(identical: 18, failed: ["r1": "restic could not restore it: ciphertext verification failed",
                                                                          "r2": "differs from the live file although …"]),
                                 restoredBytes: 18, snapshotProblems: ["snapshot 1a2b3c4d lacks /data (DRILL_PATHS): …"], expectedPaths: ["/data"])
        XCTAssertFalse(report.passed)
        XCTAssertTrue(report.summary.hasPrefix("drill failed: snapshot 1a2b3c4d lacks /data (DRILL_PATHS): …; 2 of 20 files failed: /backup/r1 (restic could not restore it: ciphertext verification failed); /backup/r2 (differs from the live file although …). Otherwise: 18 files restored and byte-identical to the live files, 18 B read back, snapshot 1a2b3c4d of 5 h ago."), report.summary)
        XCTAssertTrue(report.summary.contains("run `cloud-backup check --read-data`"), report.summary)
        XCTAssertTrue(report.fileLines.contains("FAILED: /backup/r1: restic could not restore it: ciphertext verification failed"))
        let old = DrillReport(snapshot: snapshot, now: now, results: results(identical: 2), restoredBytes: 2,
                              snapshotProblems: ["snapshot 1a2b3c4d was taken 3 days ago, longer ago than SNAPSHOT_MAX_AGE_HOURS=48 allows"], expectedPaths: [])
        XCTAssertFalse(old.passed)
        XCTAssertFalse(old.summary.contains("check --read-data"), "an old snapshot is not damaged data")
    }

    func testSizesAndAges() {
        XCTAssertEqual(formatSize(0), "0 B")
        XCTAssertEqual(formatSize(999), "999 B")
        XCTAssertEqual(formatSize(12_595), "12.3 KiB")
        XCTAssertEqual(formatSize(412 * 1024 * 1024), "412 MiB")
        XCTAssertEqual(formatSize(1_127_428_915), "1.05 GiB")
        XCTAssertEqual(describeSnapshotAge(10), "1 min ago")
        XCTAssertEqual(describeSnapshotAge(40 * 60), "40 min ago")
        XCTAssertEqual(describeSnapshotAge(5 * 3600 + 600), "5 h ago")
        XCTAssertEqual(describeSnapshotAge(3 * 86_400), "3 days ago")
    }

    func testDrillMetrics() throws {
        let statistics = DrillStatistics(identical: 17, skipped: 3, failed: 0, restoredBytes: 4096, snapshotTime: Date(timeIntervalSince1970: 1000), snapshotAgeSeconds: 18_000)
        let text = JobMetrics(job: "drill", start: Date(timeIntervalSince1970: 2000), end: Date(timeIntervalSince1970: 2010), exitCode: 0, drill: statistics).render()
        let samples = try PrometheusTextParser.parse(text)
        func value(_ name: String, _ labels: [String: String] = ["job": "drill"]) -> Double? {
            samples.first { $0.name == name && $0.labels == labels }?.value
        }
        XCTAssertEqual(value("cloud_backup_last_drill_files", ["job": "drill", "result": "identical"]), 17)
        XCTAssertEqual(value("cloud_backup_last_drill_files", ["job": "drill", "result": "skipped"]), 3)
        XCTAssertEqual(value("cloud_backup_last_drill_files", ["job": "drill", "result": "failed"]), 0)
        XCTAssertEqual(value("cloud_backup_last_drill_restored_bytes"), 4096)
        XCTAssertEqual(value("cloud_backup_last_drill_snapshot_timestamp_seconds"), 1000)
        XCTAssertEqual(value("cloud_backup_last_drill_snapshot_age_seconds"), 18_000)
        XCTAssertEqual(value("cloud_backup_last_run_success"), 1)
        XCTAssertFalse(JobMetrics(job: "backup", start: Date(), end: Date(), exitCode: 0).render().contains("drill"))
    }
}

final class RestoreCommandTests: XCTestCase {
    func testArgumentsAreCheckedBeforeAnythingRuns() throws {
        XCTAssertEqual(try ParsedCommandLine.parse(["restore", "--help"]), .help(topic: "restore"))
        XCTAssertEqual(try ParsedCommandLine.parse(["restore", "--target", "/r"]), .run(name: "restore", arguments: ["--target", "/r"]))
        XCTAssertEqual(try ParsedCommandLine.parse(["drill"]), .run(name: "drill", arguments: []))
        XCTAssertEqual(try ParsedCommandLine.parse(["drill", "--help"]), .help(topic: "drill"))
        for bad in [["restore"], ["restore", "--target"], ["restore", "--target", "/a", "--target", "/b"], ["restore", "--target", "/a", "--delete"],
                    ["restore", "abcd1234", "ef567890", "--target", "/a"], ["drill", "--files", "3"]] {
            XCTAssertThrowsError(try ParsedCommandLine.parse(bad), "\(bad)") { error in
                XCTAssertEqual((error as? CloudBackupError)?.exitCode, ExitCode.usage, "\(bad)")
            }
        }
        XCTAssertThrowsError(try ParsedCommandLine.parse(["restore"])) { error in
            XCTAssertTrue("\(error)".contains("restore: --target is required. Usage: cloud-backup restore [SNAPSHOT] --target DIR"), "\(error)")
        }
    }

    func testRequests() throws {
        XCTAssertEqual(try RestoreRequest.parse(["--target", "/srv/restore"], currentDirectory: "/home/u"),
                       RestoreRequest(snapshot: nil, target: "/srv/restore", includes: [], overwrite: false))
        XCTAssertEqual(try RestoreRequest.parse(["latest", "--target=restore/", "--include", "/backup/a", "--include=/backup/b*", "--overwrite"], currentDirectory: "/home/u"),
                       RestoreRequest(snapshot: nil, target: "/home/u/restore", includes: ["/backup/a", "/backup/b*"], overwrite: true))
        XCTAssertEqual(try RestoreRequest.parse(["--target", "/r", "1a2b3c4d"], currentDirectory: "/").snapshot, "1a2b3c4d")
        XCTAssertEqual(try RestoreRequest.parse(["--target", "/r", "--", "1a2b3c4d"], currentDirectory: "/").snapshot, "1a2b3c4d")
        for bad in ["--force", "XYZ", "1a2"] {
            XCTAssertThrowsError(try RestoreRequest.parse(["--target", "/r", bad], currentDirectory: "/"), bad) { error in
                XCTAssertEqual((error as? CloudBackupError)?.exitCode, ExitCode.usage)
            }
        }
    }

    func testANonEmptyTargetIsRefusedUnlessOverwriteIsGiven() throws {
        let directory = NSTemporaryDirectory() + "restore-target-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        XCTAssertEqual(RestoreCommand.inspect(target: directory), .absent)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        XCTAssertEqual(RestoreCommand.inspect(target: directory), .empty)
        _ = FileManager.default.createFile(atPath: directory + "/old.txt", contents: Data("x".utf8))
        XCTAssertEqual(RestoreCommand.inspect(target: directory), .notEmpty(entries: 1))
        XCTAssertEqual(RestoreCommand.inspect(target: directory + "/old.txt"), .notADirectory)

        let refusal = try XCTUnwrap(RestoreCommand.refusal(.notEmpty(entries: 1), target: directory, overwrite: false))
        XCTAssertEqual(refusal.exitCode, ExitCode.cannotCreate)
        XCTAssertTrue(refusal.description.hasPrefix("restore refused: \(directory) is not empty (1 entry)"), refusal.description)
        XCTAssertTrue(refusal.description.contains("add --overwrite"), refusal.description)
        XCTAssertTrue(refusal.description.contains("nothing is deleted"), refusal.description)
        XCTAssertNil(RestoreCommand.refusal(.notEmpty(entries: 3), target: directory, overwrite: true))
        XCTAssertNil(RestoreCommand.refusal(.absent, target: directory, overwrite: false))
        XCTAssertNil(RestoreCommand.refusal(.empty, target: directory, overwrite: false))
        XCTAssertEqual(RestoreCommand.refusal(.notADirectory, target: directory, overwrite: true)?.exitCode, ExitCode.cannotCreate)
    }

    func testWhatItSaysAboutOwnersAndHowToCompare() throws {
        XCTAssertEqual(RestoreCommand.ownership(euid: 0, user: "root"), "owners, groups and modes kept (run as root)")
        let user = RestoreCommand.ownership(euid: 1000, user: "user")
        XCTAssertTrue(user.hasPrefix("modes kept, but owners were not: every restored file belongs to user."), user)
        XCTAssertTrue(user.contains("docker exec --user root"), user)

        let target = NSTemporaryDirectory() + "restore-compare-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: target) }
        try FileManager.default.createDirectory(atPath: target + "/backup/dir1", withIntermediateDirectories: true)
        XCTAssertEqual(RestoreCommand.comparisonCommands(target: target, snapshotPaths: ["/backup/dir1", "/backup/dir2"], includes: []),
                       ["compare with the originals: diff -r \(target)/backup/dir1 /backup/dir1"])
        XCTAssertEqual(RestoreCommand.comparisonCommands(target: target, snapshotPaths: ["/backup"], includes: ["/backup/dir1"]),
                       ["compare with the originals: diff -r \(target)/backup/dir1 /backup/dir1"])
        XCTAssertEqual(RestoreCommand.comparisonCommands(target: target, snapshotPaths: ["/other"], includes: ["*.txt"]),
                       ["the restored files are under \(target), each at its original path"])
        _ = FileManager.default.createFile(atPath: target + "/backup/dir1/a", contents: Data(count: 10))
        symlink("/etc/passwd", target + "/backup/dir1/link")
        XCTAssertEqual(RestoreCommand.count(target).files, 1)
        XCTAssertEqual(RestoreCommand.count(target).bytes, 10)
    }
}

final class DrillWorkspaceTests: XCTestCase {
    var parent: String!

    override func setUp() {
        parent = NSTemporaryDirectory() + "drill-workspace-\(UUID().uuidString)"
    }

    override func tearDown() {
        _ = DrillWorkspace.removeTree(parent)
    }

    func testAPrivateDirectoryRemovedWithReadOnlyContentsWithoutFollowingLinks() throws {
        let outside = parent + "-outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        defer { _ = DrillWorkspace.removeTree(outside) }
        _ = FileManager.default.createFile(atPath: outside + "/live.txt", contents: Data("live".utf8))

        let workspace = try DrillWorkspace.create(in: parent)
        var info = stat()
        XCTAssertEqual(lstat(workspace.path, &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o700)
        let deep = workspace.target + "/backup/dir"
        try FileManager.default.createDirectory(atPath: deep, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: deep + "/f", contents: Data("x".utf8))
        symlink(outside, deep + "/link-to-dir")
        symlink(outside + "/live.txt", deep + "/link-to-file")
        chmod(deep, 0o500)
        chmod(workspace.target + "/backup", 0o000)

        XCTAssertNil(workspace.remove())
        XCTAssertFalse(FileManager.default.fileExists(atPath: workspace.path))
        XCTAssertEqual(try String(contentsOfFile: outside + "/live.txt", encoding: .utf8), "live", "a restored link is removed, not followed")
    }

    func testOnlyTheDirectoriesOfEndedDrillsAreRemovedAsAbandoned() throws {
        let live = try DrillWorkspace.create(in: parent)
        let ended = try DrillWorkspace.create(in: parent)
        try FileManager.default.createDirectory(atPath: ended.target + "/x", withIntermediateDirectories: true)
        // What a SIGKILLed drill leaves: the directory, its lock no longer held.
        let lockHolderGone = parent + "/" + DrillWorkspace.prefix + "killed"
        try FileManager.default.createDirectory(atPath: lockHolderGone + "/restore/a", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: lockHolderGone + "/lock", contents: Data())
        _ = FileManager.default.createFile(atPath: parent + "/unrelated", contents: Data())

        XCTAssertEqual(DrillWorkspace.removeAbandoned(in: parent), [lockHolderGone])
        XCTAssertTrue(FileManager.default.fileExists(atPath: live.path), "a running drill's directory stays")
        XCTAssertTrue(FileManager.default.fileExists(atPath: ended.path))
        XCTAssertTrue(FileManager.default.fileExists(atPath: parent + "/unrelated"))
        XCTAssertNil(live.remove())
        XCTAssertNil(ended.remove())
    }

    func testTheWorkspaceIsNeverInsideABackedUpPath() {
        XCTAssertEqual(DrillWorkspace.chooseParent(stateDirectory: "/home/user/.local/state/cloud-backup", temporaryDirectory: "/tmp", backedUp: ["/backup"]),
                       "/home/user/.local/state/cloud-backup")
        XCTAssertEqual(DrillWorkspace.chooseParent(stateDirectory: "/home/user/.local/state/cloud-backup", temporaryDirectory: "/tmp", backedUp: ["/home/user"]), "/tmp")
        XCTAssertNil(DrillWorkspace.chooseParent(stateDirectory: "/home/user/state", temporaryDirectory: "/tmp", backedUp: ["/"]))
    }
}

final class DrillConfigurationTests: XCTestCase {
    func load(_ extra: [String: String]) throws -> Configuration {
        try ConfigurationLoader.load(environment: ["HOME": "/home/user", "RESTIC_PASSWORD": "pw"].merging(extra) { $1 }, needs: [.repositoryPassword])
    }

    func testDrillSettings() throws {
        let defaults = try load([:])
        XCTAssertEqual(defaults.drillFiles, 20)
        XCTAssertEqual(defaults.drillPaths, [])
        XCTAssertNil(defaults.drillCheckURL)
        let set = try load(["DRILL_FILES": "5", "DRILL_PATHS": "/backup/dir1:/backup/dir2/", "DRILL_CHECK_URL": "https://hc-ping.com/5c1e4b38-0000-4000-8000-00000000d711"])
        XCTAssertEqual(set.drillFiles, 5)
        XCTAssertEqual(set.drillPaths, ["/backup/dir1", "/backup/dir2"])
        XCTAssertEqual(set.drillCheckURL?.absoluteString, "https://hc-ping.com/5c1e4b38-0000-4000-8000-00000000d711")
        XCTAssertTrue(set.secrets.contains("https://hc-ping.com/5c1e4b38-0000-4000-8000-00000000d711"), "a ping URL is kept out of logs")
        XCTAssertNil(set.childEnvironment["DRILL_CHECK_URL"], "children never get it")

        XCTAssertThrowsError(try load(["DRILL_FILES": "0", "DRILL_PATHS": "backup/dir1", "DRILL_CHECK_URL": "not a url"])) { error in
            guard case CloudBackupError.configuration(let problems) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(problems.count, 3, "\(problems)")
            XCTAssertTrue(problems.contains { $0.hasPrefix("DRILL_FILES=0: expected a number of files from 1 to 1000 (default 20)") }, "\(problems)")
            XCTAssertTrue(problems.contains { $0.hasPrefix("DRILL_PATHS: backup/dir1 is not an absolute path") }, "\(problems)")
            XCTAssertTrue(problems.contains { $0.hasPrefix("DRILL_CHECK_URL: expected an http(s) Healthchecks ping URL") }, "\(problems)")
        }
    }
}

/// The drill's decisions before any file is restored, with restic scripted.
final class DrillJobTests: XCTestCase {
    func run(_ answer: @escaping @Sendable (ProcessSpec, Int) -> ProcessResult) throws -> (code: Int32, log: String, commands: [String], pings: [String]) {
        let directory = NSTemporaryDirectory() + "drill-job-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = FileManager.default.createFile(atPath: directory + "/restic", contents: Data("#!/bin/sh\n".utf8), attributes: [.posixPermissions: 0o755])
        let configuration = try ConfigurationLoader.load(environment: ["RESTIC_PASSWORD": "pw", "PATH": directory, "HOME": directory, "RESTIC_REST_PORT": "1",
                                                                      "CLOUD_BACKUP_STATE_DIR": directory + "/state", "RESTIC_HOST": "vm1",
                                                                      "DRILL_CHECK_URL": "http://127.0.0.1:9/ping/d"], needs: [.repositoryPassword])
        let runner = FakeProcessRunner(answer: answer)
        let lines = LineCollector()
        let pings = LineCollector()
        let context = JobContext(environment: [:], runner: runner, signals: SignalMonitor(), log: Logger(sink: { lines.add($0) }),
                                 transport: HTTPTransport { url, body, _ in
                                     pings.add("\(url.path) \(body.map { String(decoding: $0, as: UTF8.self) } ?? "")\n")
                                     return .init(status: 200, headers: [:])
                                 },
                                 hostName: "vm1", sleep: { _ in }, backoffScale: 0.001, stdoutIsTerminal: false)
        let code = DrillJob(configuration: configuration, context: context).run()
        return (code, lines.text, runner.commands, pings.text.split(separator: "\n").map(String.init))
    }

    func testNoSnapshotOfThisHostFailsAndSaysWhy() throws {
        let (code, log, commands, pings) = try run { spec, _ in
            ProcessResult(status: .exited(0), standardOutput: #"[{"time":"2026-12-03T02:00:00Z","paths":["/srv"],"hostname":"other","id":"cccc3333","short_id":"cccc3333"}]"#)
        }
        XCTAssertEqual(code, 1)
        XCTAssertEqual(commands, ["restic snapshots --json --no-lock --latest 1 --host vm1"])
        XCTAssertTrue(log.contains("drill failed: the repository holds no snapshot of host vm1"), log)
        XCTAssertEqual(pings.first, "/ping/d/start ")
        XCTAssertTrue(pings.contains { $0.hasPrefix("/ping/d/1 drill failed: the repository holds no snapshot of host vm1") }, "\(pings)")
    }

    func testAnEmptySnapshotFailsWithoutRestoringAndAWrongPasswordIsNamed() throws {
        let (code, log, commands, _) = try run { spec, _ in
            if spec.arguments.first == "snapshots" {
                return ProcessResult(status: .exited(0), standardOutput: #"[{"time":"2020-01-01T02:00:00Z","paths":["/backup"],"hostname":"vm1","id":"aaaa1111bbbb","short_id":"aaaa1111"}]"#)
            }
            return ProcessResult(status: .exited(0), standardOutput: #"{"time":"2026-12-03T02:00:00Z","paths":["/backup"],"hostname":"vm1","id":"aaaa1111bbbb","short_id":"aaaa1111","struct_type":"snapshot"}"#)
        }
        XCTAssertEqual(code, 1)
        XCTAssertEqual(commands, ["restic snapshots --json --no-lock --latest 1 --host vm1", "restic ls --json aaaa1111bbbb"])
        XCTAssertTrue(log.contains("snapshot aaaa1111 holds no file"), log)
        XCTAssertTrue(log.contains("longer ago than SNAPSHOT_MAX_AGE_HOURS=48"), "the fake snapshot is old too: \(log)")

        let (wrong, wrongLog, _, _) = try run { _, _ in
            ProcessResult(status: .exited(1), standardError: "Fatal: wrong password or no key found\n")
        }
        XCTAssertEqual(wrong, 1)
        XCTAssertTrue(wrongLog.contains("drill failed: wrong password — RESTIC_PASSWORD does not open the repository"), wrongLog)
    }
}
